// The app of the container example: a plain node:http server under baton. See README.md.
//
// Outside a container, in this directory (`npm install --no-save ../..` links the
// repository's baton here; in your own project `npm install` fetches it):
//
//   npx baton start app.mjs --name web --count 2 --listen :8080 --health :9000
//   curl http://127.0.0.1:8080/          # hello from web#1 (pid ..., generation 1)
//   curl -i http://127.0.0.1:9000/ready  # 200 + the status JSON while the fleet is ready
import http from 'node:http'

import { worker } from 'batonjs'

const server = http.createServer((req, res) => {
  res.setHeader('content-type', 'text/plain; charset=utf-8')
  res.end(`hello from ${worker.group}#${worker.id} (pid ${process.pid}, generation ${worker.generation})\n`)
})

// On the socket the master holds; the worker is ready once it listens. On reload or stop
// the runtime drains keep-alive connections so no client sees an error.
await worker.listen(server)
