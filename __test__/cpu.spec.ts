/**
 * CPU in `baton status`: per worker and for the master, the CPU use over the last sample
 * interval (about a second) in percent of one core, sampled by the core's supervisor loop;
 * the master's own memory beside it. Real workers, one burning a core, one idle.
 */
import test from 'ava'
import { fixture, startFleet } from './helpers/fleet.js'
import { cpuSeconds } from '../harness/proc.mjs'
import { freePort, waitFor } from './helpers/processes.js'

test('a worker burning a core shows cpu > 50 (half what /proc says it got on a loaded machine), an idle one < 20; the master shows cpu, rssBytes and openFds', async (t) => {
  const port = await freePort()
  const fleet = await startFleet(t, {
    script: fixture('cpu-burner.mjs'),
    count: 2,
    listen: [`127.0.0.1:${port}`],
    env: { BURN_ID: '0' },
  })
  const first = await fleet.status()
  const busyPid = first.workers.find((w) => w.id === 0)?.pid
  t.truthy(busyPid)
  const since = { at: Date.now(), cpu: cpuSeconds(busyPid!) ?? 0 }
  const status = await waitFor(
    async () => {
      const s = await fleet.status()
      const busy = s.workers.find((w) => w.id === 0)
      const idle = s.workers.find((w) => w.id === 1)
      // What the burner really got since we started watching, by /proc: a core when the
      // machine is free. A loaded shared machine gives it less (Linux's autogroup
      // scheduling gives each session an equal share, whatever the process's nice), and
      // then it must show at least half of what it got rather than 50.
      const elapsed = (Date.now() - since.at) / 1000
      const got = (((cpuSeconds(busyPid!) ?? 0) - since.cpu) / elapsed) * 100
      const expected = Math.min(50, got / 2)
      const busyCpu = busy?.cpu ?? null
      const idleCpu = idle?.cpu ?? null
      if (elapsed > 2 && busyCpu !== null && idleCpu !== null) {
        if (busyCpu > expected && idleCpu < 20 && busyCpu > idleCpu + 5) return s
      }
      throw new Error(
        `busy worker cpu ${busy?.cpu} (expected > ${expected.toFixed(1)}: it got ${got.toFixed(1)} % of a core by /proc), idle worker cpu ${idle?.cpu}`,
      )
    },
    { timeoutMs: 20_000, intervalMs: 300, message: 'busy worker cpu > 50 and idle worker cpu < 20' },
  )
  const busy = status.workers.find((w) => w.id === 0)!
  t.true(typeof busy.cpuSeconds === 'number' && busy.cpuSeconds > 0, 'cpuSeconds counts the busy worker')
  t.true(typeof status.cpu === 'number' && status.cpu >= 0, `master cpu: ${status.cpu}`)
  t.true(typeof status.rssBytes === 'number' && status.rssBytes > 0, `master rssBytes: ${status.rssBytes}`)
  t.true(typeof status.openFds === 'number' && status.openFds > 3, `master openFds: ${status.openFds}`)
  t.true(typeof status.cpuSeconds === 'number' && status.cpuSeconds > 0)

  const table = await fleet.cli(['status', fleet.name])
  t.is(table.code, 0, table.stderr)
  t.regex(table.stdout, /master pid \d+ {2}generation \d+ {2}cpu \d+\.\d% {2}memory \d+\.\d MiB/)
  const header = table.stdout.split('\n').find((l) => l.startsWith('GROUP'))
  t.regex(header ?? '', /RESTARTS\s+CPU\s+MEMORY/)
  const row = table.stdout.split('\n').find((l) => l.includes(`  ${busy.pid}  `))
  t.regex(row ?? '', /\s\d+\.\d%\s+\d+\.\d MiB/, `the busy worker's row shows its CPU: ${row}`)
})
