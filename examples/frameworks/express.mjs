// Express 5 as its docs write it: no baton import. Run with
//   PORT=3000 baton start examples/frameworks/express.mjs --count 4
import express from 'express'

import { version } from './version.mjs'

const app = express()
app.get('/', (req, res) => res.set('x-pid', String(process.pid)).send(version))
app.listen(Number(process.env.PORT ?? 3000))
