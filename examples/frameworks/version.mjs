// Which code is serving: the content of $APP_VERSION_FILE at start (the tests rewrite it
// to "deploy"), else 'v1'. Not baton: any app can tell its version however it likes.
import { readFileSync } from 'node:fs'

export const version = process.env.APP_VERSION_FILE ? readFileSync(process.env.APP_VERSION_FILE, 'utf8').trim() : 'v1'
