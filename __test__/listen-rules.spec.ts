/**
 * What a worker may ask for on its control channel (`baton:listen`, see
 * crates/baton-core/src/event_loop/drop_in.rs): a worker's user is not trusted, so a
 * worker that is not the master's user gets no privileged port, a group without drop-in
 * gets no socket at all, and each refusal is an ordinary listen error in the worker and a
 * log line naming the worker, the port and the rule. Needs root (CI runs as root).
 */
import test, { type ExecutionContext } from 'ava'
import { writeFileSync } from 'node:fs'
import { connect } from 'node:net'
import { join } from 'node:path'
import { fixture, startFleet, type Fleet } from './helpers/fleet.js'
import { portIsFree } from './helpers/http.js'
import { tmpDir, waitFor } from './helpers/processes.js'

const asRoot = process.getuid?.() === 0 ? test.serial : test.skip

/** A free port below 1024 on 127.0.0.1: 81 when it is free. */
async function freeLowPort(): Promise<number> {
  for (let port = 81; port < 1024; port++) if (await portIsFree(port)) return port
  throw new Error('no free port below 1024 on 127.0.0.1')
}

/** Whether a TCP connect to 127.0.0.1:`port` is accepted. */
function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect({ host: '127.0.0.1', port })
    s.once('connect', () => {
      s.destroy()
      resolve(true)
    })
    s.once('error', () => resolve(false))
  })
}

/** Start one worker of `raw-listen.mjs` with `group` settings; resolve with its answer. */
async function ask(
  t: ExecutionContext,
  group: Record<string, unknown>,
  env: Record<string, string>,
): Promise<{ fleet: Fleet; answer: Record<string, unknown> }> {
  const dir = await tmpDir('baton-listen-rules-')
  t.teardown(() => dir.cleanup())
  writeFileSync(
    join(dir.path, 'baton.config.json'),
    JSON.stringify({ name: 'fleet', groups: { web: { script: fixture('raw-listen.mjs'), count: 1, env, ...group } } }),
  )
  const fleet = await startFleet(t, { cwd: dir.path, expectWorkers: 1 })
  const line = await waitFor(() => /^answer (.*)$/m.exec(fleet.log.text)?.[1], {
    message: `the worker's answer; log:\n${fleet.log.text}`,
  })
  return { fleet, answer: JSON.parse(line) as Record<string, unknown> }
}

for (const dropIn of [false, true]) {
  asRoot(
    `a uid-65534 worker's raw baton:listen for a port below 1024 is refused (dropIn: ${dropIn}), logged, and nothing listens there`,
    async (t) => {
      const port = await freeLowPort()
      const { fleet, answer } = await ask(
        t,
        { uid: 'nobody', dropIn },
        { ASK_PORT: String(port), ASK_HOST: '127.0.0.1', MODE: 'raw' },
      )
      t.is(answer.handle, false, JSON.stringify(answer))
      t.is(answer.code, 'EACCES')
      t.regex(String(answer.error), dropIn ? new RegExp(`port ${port} is below 1024`) : /dropIn: false/)
      t.false(await accepts(port), `nothing listens on 127.0.0.1:${port}`)
      t.true(await portIsFree(port))
      t.regex(fleet.log.text, new RegExp(`refused web#0 \\(pid \\d+\\)'s listen on port ${port}.*(below 1024|dropIn)`))
      // The fleet goes on.
      t.is((await fleet.status()).workers[0]?.state, 'ready')
    },
  )
}

asRoot(
  "a uid-65534 drop-in worker's own listen() on a port below 1024 fails like Node's: EACCES, syscall listen, the port and the rule",
  async (t) => {
    const port = await freeLowPort()
    const { answer } = await ask(t, { uid: 'nobody' }, { ASK_PORT: String(port), MODE: 'listen' })
    t.is(answer.code, 'EACCES', JSON.stringify(answer))
    t.is(answer.syscall, 'listen')
    t.is(answer.port, port)
    t.regex(String(answer.error), new RegExp(`^listen EACCES: 127\\.0\\.0\\.1:${port}: port ${port} is below 1024`))
    t.true(await portIsFree(port))
  },
)

asRoot("a drop-in worker of the master's own uid still gets its port below 1024", async (t) => {
  const port = await freeLowPort()
  const { answer } = await ask(t, {}, { ASK_PORT: String(port), MODE: 'listen' })
  t.deepEqual((answer.listening as { port?: number } | undefined)?.port, port, JSON.stringify(answer))
  t.true(await accepts(port))
})

asRoot("the group's own listen port below 1024 is still given to its uid-65534 worker", async (t) => {
  const port = await freeLowPort()
  const { answer } = await ask(
    t,
    { uid: 'nobody', listen: `127.0.0.1:${port}` },
    { ASK_PORT: String(port), ASK_HOST: '127.0.0.1', MODE: 'raw' },
  )
  t.is(answer.handle, true, JSON.stringify(answer))
  t.is(answer.error, undefined)
})
