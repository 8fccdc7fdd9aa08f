/**
 * The CI-sized soak (the full one is `npm run soak`): 50 reloads in a row under keep-alive
 * HTTP load. The master's open fds and its zombie children come back to their start
 * values, its RSS stays flat, and no request fails.
 */
import test from 'ava'
import { connect } from 'node:net'
import { join } from 'node:path'
import { versionedFleet } from './helpers/fleet.js'
import { startLoad } from '../harness/load.mjs'
import { describeResources, resources } from '../harness/proc.mjs'
import { assertNoFailedRequests } from './helpers/reload.js'
import { waitFor, withTimeout } from './helpers/processes.js'

/** Send one control request on the master's socket; the final (`"ok"`) line, parsed. */
function request(path: string, line: string): Promise<{ ok: boolean; error?: string }> {
  return new Promise((resolve, reject) => {
    const s = connect(path)
    let buf = ''
    s.setEncoding('utf8')
    s.on('data', (d: string) => {
      buf += d
      for (const l of buf.split('\n')) {
        if (l.includes('"ok"')) {
          s.destroy()
          resolve(JSON.parse(l) as { ok: boolean; error?: string })
          return
        }
      }
    })
    s.on('error', reject)
    s.on('close', () => reject(new Error(`control connection closed without an answer: ${buf}`)))
    s.on('connect', () => s.write(`${line}\n`))
  })
}

test.serial(
  '50 reloads under load: master fds and zombies back to their start values, RSS flat, 0 failed requests',
  async (t) => {
    const count = 2
    // Both slots at once (--parallel 2): half the time per reload, the same paths.
    const vf = await versionedFleet(t, { count, flags: ['--parallel', '2'] })
    const pid = vf.fleet.pid
    const path = join(vf.fleet.runtimeDir, `${vf.fleet.name}.sock`)
    const load = startLoad({ port: vf.port, connections: 16 })
    t.teardown(() => load.stop())
    await waitFor(() => load.snapshot().ok > 200, { message: 'load running' })
    const start = resources(pid)
    const samples: Array<[number, ReturnType<typeof resources>]> = [[0, start]]
    for (let n = 1; n <= 50; n++) {
      vf.deploy(`v${n + 1}`)
      const answer = await withTimeout(request(path, '{"cmd":"reload"}'), 30_000, `reload ${n}`)
      t.true(answer.ok, `reload ${n}: ${answer.error ?? ''}`)
      if (n % 10 === 0) samples.push([n, resources(pid)])
    }
    const result = await load.stop()
    // The last replaced workers are reaped by the master within moments.
    await waitFor(
      () => {
        const r = resources(pid)
        return r.fds === start.fds && r.zombies === 0 && r.children === count
      },
      { timeoutMs: 5000, message: `master fds back to ${start.fds}, no zombie: ${describeResources(resources(pid))}` },
    )
    const end = resources(pid)
    t.log(
      [...samples.map(([n, r]) => `${n} reloads: ${describeResources(r)}`), `settled: ${describeResources(end)}`].join(
        '\n',
      ),
    )
    t.log(`${result.requests} requests, ${result.errors} failed`)
    assertNoFailedRequests(t, result)
    t.is(end.fds, start.fds)
    t.is(end.zombies, 0)
    t.true(
      Math.max(...samples.map(([, r]) => r.zombies)) <= count,
      'zombies never pile up (at most the workers being reaped at a sample)',
    )
    t.true(
      end.rssBytes - start.rssBytes < 20 * 1048576,
      `master RSS ${describeResources(start)} -> ${describeResources(end)}`,
    )
    const s = await vf.fleet.status()
    t.is(s.generation, 51)
    t.true(s.workers.every((w) => w.state === 'ready'))
  },
)
