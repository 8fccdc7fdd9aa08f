// Workerman's GatewayWorker pattern in ONE script: this file is the master and the
// workers of both groups (Workerman style: `supervisor.group(...)` + `runAll()`).
//
//   gateway   reloadable: false, 1 worker, TCP on 127.0.0.1:$GATEWAY_PORT (default 7000).
//             Holds the long-lived client connections. Each line a client sends is
//             forwarded to a business worker over HTTP, and the answer is written back.
//   business  reloadable, 2 workers, HTTP on 127.0.0.1:$BUSINESS_PORT (default 7001).
//             The application logic: this is the code you deploy several times a day.
//
// A reload replaces only the business workers, one at a time; the gateway process, and so
// every client connection, stays up. The gateway just runs its `onWorkerReload` hook.
//
// Run it (from the repository root):
//
//   node examples/gateway/start.mjs start          # foreground (`start -d`: background)
//   nc 127.0.0.1 7000                              # type lines; answers come back
//   node examples/gateway/start.mjs reload         # edit business logic below, then reload:
//                                                  # the nc session stays connected and the
//                                                  # answers now come from generation 2
//   node examples/gateway/start.mjs status
//   node examples/gateway/start.mjs stop
import http from 'node:http'
import net from 'node:net'
import { createInterface } from 'node:readline'

import { Supervisor } from 'batonjs'

const GATEWAY_PORT = Number(process.env.GATEWAY_PORT ?? 7000)
const BUSINESS_PORT = Number(process.env.BUSINESS_PORT ?? 7001)

const supervisor = new Supervisor({ name: 'gateway-example' })

// ---- gateway: long-lived client connections, never restarted by a reload --------------

const clients = new Set()
// Keep-alive connections to the business workers. A reload closes them from the business
// side (`Connection: close` on the last response), and the agent opens new ones.
const agent = new http.Agent({ keepAlive: true, maxSockets: 64 })

function askBusiness(line, attempt = 1) {
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: '127.0.0.1', port: BUSINESS_PORT, method: 'POST', path: '/message', agent },
      (res) => {
        let body = ''
        res.setEncoding('utf8')
        res.on('data', (c) => (body += c))
        res.on('end', () => resolve(body))
        res.on('error', reject)
      },
    )
    req.on('error', (err) => {
      // A kept-alive socket can be closed by the business side just as we reuse it; the
      // message is a pure function of its input, so sending it once more is safe.
      if (attempt < 3 && (err.code === 'ECONNRESET' || err.code === 'EPIPE')) {
        resolve(askBusiness(line, attempt + 1))
      } else {
        reject(err)
      }
    })
    req.end(line)
  })
}

supervisor.group(
  'gateway',
  { count: 1, reloadable: false, listen: `127.0.0.1:${GATEWAY_PORT}` },
  {
    async onWorkerStart(w) {
      const server = net.createServer((socket) => {
        clients.add(socket)
        socket.on('close', () => clients.delete(socket))
        socket.on('error', () => undefined)
        socket.write(`welcome, gateway pid ${process.pid}\n`)
        // Answer lines in order: one request to the business workers at a time.
        let chain = Promise.resolve()
        createInterface({ input: socket, crlfDelay: Infinity }).on('line', (line) => {
          chain = chain.then(async () => {
            try {
              const answer = await askBusiness(line)
              if (!socket.destroyed) socket.write(`${answer}\n`)
            } catch (err) {
              if (!socket.destroyed) socket.write(`error: ${err.message}\n`)
            }
          })
        })
      })
      await w.listen(server) // the worker is ready once it listens
      console.log(`[gateway] pid ${process.pid} accepting clients on 127.0.0.1:${GATEWAY_PORT}`)
    },
    onWorkerReload() {
      // The business workers are being replaced; the gateway keeps its connections. A real
      // gateway could reload its own configuration here.
      console.log(`[gateway] reload: business workers are being replaced; ${clients.size} client(s) stay connected`)
    },
    onWorkerStop() {
      // A real stop (not a reload): say goodbye so clients can reconnect elsewhere.
      for (const socket of clients) socket.end('gateway shutting down\n')
    },
  },
)

// ---- business: the application logic, replaced on every reload -------------------------

supervisor.group(
  'business',
  { count: 2, listen: `127.0.0.1:${BUSINESS_PORT}` },
  {
    async onWorkerStart(w) {
      const server = http.createServer(async (req, res) => {
        let line = ''
        for await (const chunk of req) line += chunk
        // Edit this line and run `reload`: the next answers come from the new code.
        const answer = `[business #${w.id} gen ${w.generation} pid ${process.pid}] ${line.toUpperCase()}`
        res.setHeader('content-type', 'text/plain; charset=utf-8')
        res.end(answer)
      })
      await w.listen(server)
    },
    onWorkerStop(w) {
      console.log(`[business #${w.id}] pid ${process.pid} drained and stopping`)
    },
  },
)

// Master: reads start [-d] | stop | restart | reload | status from argv. Worker: runs the
// hooks of its group.
await supervisor.runAll()
