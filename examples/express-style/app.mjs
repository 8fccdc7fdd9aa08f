// An app shaped like an Express / Fastify service (a router, middleware, JSON
// responses, a database pool), written with node:http only so that it has no
// dependencies. With Express or Fastify the baton part is the same: pass the
// `http.Server` to `worker.listen()` (Express: `http.createServer(app)`; Fastify:
// `fastify.server` after `await fastify.ready()`), and close resources in `worker.onStop`.
//
// Run it (from the repository root):
//
//   npx baton start examples/express-style/app.mjs --name users --count 2 --listen 127.0.0.1:8081
//   curl http://127.0.0.1:8081/users/1
//   curl -X POST http://127.0.0.1:8081/echo -d '{"hello":"world"}'
//   npx baton reload users   # each old worker drains, then closes its pool ("pool closed")
//   npx baton status users
//   npx baton stop users
import http from 'node:http'

import { worker } from 'batonjs'

// ---- a fake database pool (stands in for pg.Pool, mysql2, a Redis client...) ------------

function createPool({ size }) {
  let open = true
  let active = 0
  const users = new Map([
    [1, { id: 1, name: 'Ada' }],
    [2, { id: 2, name: 'Grace' }],
  ])
  return {
    get stats() {
      return { size, active, open }
    },
    async query(sql, params = []) {
      if (!open) throw new Error('pool is closed')
      active += 1
      try {
        await new Promise((resolve) => setTimeout(resolve, 5)) // network round trip
        if (sql === 'select user') return users.get(Number(params[0])) ?? null
        if (sql === 'select users') return [...users.values()]
        throw new Error(`unknown query ${sql}`)
      } finally {
        active -= 1
      }
    },
    async end() {
      // A real pool waits for checked-out clients, then closes its connections.
      while (active > 0) await new Promise((resolve) => setTimeout(resolve, 5))
      open = false
    },
  }
}

const db = createPool({ size: 10 })

// ---- a tiny router with middleware --------------------------------------------------

function createApp() {
  const middleware = []
  const routes = []
  const app = (req, res) => {
    const url = new URL(req.url ?? '/', 'http://localhost')
    req.path = url.pathname
    req.query = Object.fromEntries(url.searchParams)
    res.json = (status, body) => {
      res.statusCode = status
      res.setHeader('content-type', 'application/json; charset=utf-8')
      res.end(`${JSON.stringify(body)}\n`)
    }
    const handlers = [...middleware, routeHandler(routes)]
    let i = 0
    const next = async (err) => {
      if (err) return errorHandler(err, req, res)
      const handler = handlers[i++]
      try {
        await handler(req, res, next)
      } catch (e) {
        errorHandler(e, req, res)
      }
    }
    void next()
  }
  app.use = (fn) => middleware.push(fn)
  for (const method of ['get', 'post']) {
    app[method] = (pattern, handler) => {
      const keys = []
      const re = new RegExp(`^${pattern.replace(/:(\w+)/g, (_, k) => (keys.push(k), '([^/]+)'))}$`)
      routes.push({ method: method.toUpperCase(), re, keys, handler })
    }
  }
  return app
}

function routeHandler(routes) {
  return async (req, res) => {
    for (const route of routes) {
      const m = route.method === req.method && route.re.exec(req.path)
      if (m) {
        req.params = Object.fromEntries(route.keys.map((k, i) => [k, m[i + 1]]))
        return route.handler(req, res)
      }
    }
    res.json(404, { error: 'not found', path: req.path })
  }
}

function errorHandler(err, req, res) {
  if ((err.status ?? 500) >= 500) console.error(`[worker ${worker.id}] ${req.method} ${req.path}: ${err.stack ?? err}`)
  if (!res.headersSent) res.json(err.status ?? 500, { error: err.expose ? err.message : 'internal error' })
  else res.destroy()
}

// ---- the application ------------------------------------------------------------------

const app = createApp()

// Logging middleware: method, path, status, duration.
app.use(async (req, res, next) => {
  const start = process.hrtime.bigint()
  res.on('finish', () => {
    const ms = Number(process.hrtime.bigint() - start) / 1e6
    console.log(`[worker ${worker.id}] ${req.method} ${req.path} ${res.statusCode} ${ms.toFixed(1)} ms`)
  })
  await next()
})

// Identify the worker in every response (handy to watch a reload roll through).
app.use(async (req, res, next) => {
  res.setHeader('x-worker', `${worker.id}/${process.pid}/gen${worker.generation}`)
  await next()
})

// JSON body parser.
app.use(async (req, res, next) => {
  if (req.method === 'POST' || req.method === 'PUT') {
    const chunks = []
    for await (const chunk of req) chunks.push(chunk)
    const text = Buffer.concat(chunks).toString('utf8')
    try {
      req.body = text === '' ? {} : JSON.parse(text)
    } catch {
      throw Object.assign(new Error('invalid JSON body'), { status: 400, expose: true })
    }
  }
  await next()
})

app.get('/', async (req, res) => {
  res.json(200, { service: 'users', worker: worker.id, pid: process.pid, generation: worker.generation })
})

app.get('/health', async (req, res) => {
  res.json(200, { ok: true, pool: db.stats })
})

app.get('/users', async (req, res) => {
  res.json(200, await db.query('select users'))
})

app.get('/users/:id', async (req, res) => {
  const user = await db.query('select user', [req.params.id])
  if (user) res.json(200, user)
  else res.json(404, { error: `no user ${req.params.id}` })
})

app.post('/echo', async (req, res) => {
  res.json(200, { youSent: req.body })
})

// ---- baton ----------------------------------------------------------------------------

// Runs during a graceful stop (reload, `baton stop`, SIGTERM), after the HTTP server has
// drained: no request is in flight any more, so the pool can close safely.
worker.onStop(async () => {
  await db.end()
  console.log(`[worker ${worker.id}] pool closed`)
})

const server = http.createServer(app)
await worker.listen(server)
console.log(`[worker ${worker.id}] ready (pid ${process.pid}, generation ${worker.generation})`)
