// A worker for smoke.mjs: answers with its pid.
import http from 'node:http'
import { worker } from 'batonjs'

const server = http.createServer((req, res) => res.end(`${process.pid}\n`))
await worker.listen(server)
