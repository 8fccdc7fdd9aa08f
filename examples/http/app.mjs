// A textbook node:http app under baton. The only baton-specific line is
// `worker.listen(server)` instead of `server.listen(port)`.
//
// Run it (from the repository root; in your own project, after `npm install batonjs`):
//
//   npx baton start examples/http/app.mjs --count 4 --listen :8080
//   curl http://127.0.0.1:8080/          # "hello from worker 2 (pid ..., generation 1)"
//   npx baton reload app                 # replaces the 4 workers one at a time
//   npx baton status app
//   npx baton stop app
//
// Outside baton, `node examples/http/app.mjs` listens on $PORT (or 3000), and Ctrl-C
// still drains open connections before exiting.
import http from 'node:http'

import { worker } from 'batonjs'

const startedAt = new Date().toISOString()

const server = http.createServer((req, res) => {
  if (req.url === '/health') {
    res.end('ok\n')
    return
  }
  res.setHeader('content-type', 'text/plain; charset=utf-8')
  res.end(
    `hello from worker ${worker.id} (pid ${process.pid}, generation ${worker.generation}, started ${startedAt})\n`,
  )
})

// Under baton: listens on the socket the master holds and tells the master this worker
// is ready. On reload or stop, the runtime stops accepting, answers in-flight and
// kept-alive requests with `Connection: close`, then exits: no client sees an error.
await worker.listen(server)
