/**
 * The master as PID 1 of a container: a pid namespace made with `unshare --pid --fork
 * --mount-proc` (util-linux; needs root or CAP_SYS_ADMIN, as on the dev machines and CI).
 * Orphans of the namespace are reparented to the master, which must reap them; SIGTERM
 * must stop the fleet gracefully with exit 0 and leave nothing of the namespace behind.
 * Everything is observed from outside, in the host's /proc.
 */
import test from 'ava'
import { readdirSync, readFileSync } from 'node:fs'
import { BATON, fixture, runCli } from './helpers/fleet.js'
import { httpGet } from './helpers/http.js'
import { freePort, isAlive, OutputBuffer, ProcessTracker, tmpDir, waitFor, waitForExit } from './helpers/processes.js'
import type { Status } from '../src/types.js'

interface Proc {
  pid: number
  ppid: number
  state: string
  comm: string
}

/** Every process of the host, from /proc/<pid>/stat. */
function processes(): Proc[] {
  const out: Proc[] = []
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue
    let stat: string
    try {
      stat = readFileSync(`/proc/${name}/stat`, 'utf8')
    } catch {
      continue // gone meanwhile
    }
    const close = stat.lastIndexOf(')')
    const [state, ppid] = stat.slice(close + 2).split(' ')
    out.push({
      pid: Number(name),
      ppid: Number(ppid),
      state: state ?? '?',
      comm: stat.slice(stat.indexOf('(') + 1, close),
    })
  }
  return out
}

/** The descendants of `root` (not `root` itself), walking parent links in the host's /proc. */
function descendants(root: number): Proc[] {
  const all = processes()
  const found: Proc[] = []
  const parents = new Set([root])
  for (let grew = true; grew;) {
    grew = false
    for (const p of all) {
      if (parents.has(p.ppid) && !parents.has(p.pid)) {
        parents.add(p.pid)
        found.push(p)
        grew = true
      }
    }
  }
  return found
}

test.serial('as PID 1 the master reaps orphans, keeps serving, and stops with exit 0 on SIGTERM', async (t) => {
  if (process.platform !== 'linux') {
    t.pass('pid namespaces are Linux-only')
    return
  }
  const tracker = new ProcessTracker()
  t.teardown(() => tracker.killAll())
  const runtime = await tmpDir('baton-container-')
  t.teardown(() => runtime.cleanup())
  const marker = await tmpDir('baton-container-marker-')
  t.teardown(() => marker.cleanup())
  const port = await freePort()
  const env = { ...process.env, BATON_RUNTIME_DIR: runtime.path, MARKER_DIR: marker.path, ORPHANS: '5' }

  // --kill-child: should the test fail, killing unshare also kills the namespace's PID 1.
  const unshare = tracker.spawn(
    'unshare',
    [
      '--pid',
      '--fork',
      '--mount-proc',
      '--kill-child',
      process.execPath,
      BATON,
      'start',
      fixture('orphans.mjs'),
      '--name',
      'box',
      '--count',
      '2',
      '--listen',
      `127.0.0.1:${port}`,
    ],
    { env, stdio: ['ignore', 'pipe', 'pipe'] },
  )
  const log = new OutputBuffer().follow(unshare.stderr)
  log.follow(unshare.stdout)
  const exited = waitForExit(unshare)
  let spawnError: Error | undefined
  unshare.on('error', (e) => (spawnError = e))

  const started = await Promise.race([
    log.waitFor(/all workers ready/, 20_000).then(() => true),
    exited.then(() => false),
  ])
  if (!started) {
    t.fail(
      `unshare --pid --fork --mount-proc could not run the master as PID 1 of a new pid namespace ` +
        `(it needs util-linux and root or CAP_SYS_ADMIN; EPERM means no privilege): ` +
        `${spawnError?.message ?? ''}\n${log.text}`,
    )
    return
  }
  const unsharePid = unshare.pid ?? -1
  const master = await waitFor(() => descendants(unsharePid).find((p) => p.ppid === unsharePid), {
    message: 'the master (child of unshare) in the host /proc',
  })
  tracker.trackPid(master.pid)

  // Slot 0's first worker left orphans and exited; it is restarted.
  await log.waitFor(/box#0 \(pid \d+\) exited with code 1; restarting/)
  await waitFor(() => (log.text.match(/box#0 ready/g) ?? []).length >= 2, {
    message: `box#0 ready again:\n${log.text}`,
  })

  // More orphans, one per request; and the workers serve.
  const pids = new Set<string>()
  for (let i = 0; i < 10; i++) {
    const r = await httpGet({ port, path: '/orphan' })
    t.is(r.status, 200)
    t.is(r.body, 'ok')
    pids.add(String(r.headers['x-pid']))
  }
  await waitFor(
    async () => {
      pids.add(String((await httpGet({ port, path: '/' })).headers['x-pid']))
      return pids.size >= 2
    },
    { message: 'both workers answer' },
  )

  const zombies = (): Proc[] => descendants(unsharePid).filter((p) => p.state === 'Z')
  await waitFor(() => zombies().length === 0, {
    timeoutMs: 10_000,
    message: `no zombie in the namespace (left: ${JSON.stringify(zombies())})`,
  })
  // 5 orphans per worker start (3 starts), the crashed worker's shell, 10 requests.
  const status = async (): Promise<Status> => {
    const r = await runCli(['status', 'box', '--json'], { BATON_RUNTIME_DIR: runtime.path })
    if (r.code !== 0) throw new Error(`baton status: ${r.stderr}`)
    return JSON.parse(r.stdout) as Status
  }
  await waitFor(async () => ((await status()).reapedOrphans ?? 0) >= 26, {
    message: 'at least 26 orphans reaped',
  })
  t.deepEqual(zombies(), [], 'still no zombie')
  t.regex(log.text, /running as PID 1: orphaned processes are reaped/)
  const s = await status()
  t.is(s.pid, 1, 'the master is PID 1 of its namespace')
  t.true(s.ready)

  // SIGTERM to the master (its host pid): graceful stop, exit 0 (unshare mirrors its child).
  const inNamespace = [master, ...descendants(master.pid)].map((p) => p.pid)
  process.kill(master.pid, 'SIGTERM')
  const end = await exited
  t.deepEqual(end, { code: 0, signal: null }, log.text)
  t.regex(log.text, /all workers stopped/)
  t.notRegex(log.text, /SIGKILL/)
  await waitFor(() => inNamespace.every((pid) => !isAlive(pid)), {
    timeoutMs: 5000,
    message: `every process of the namespace gone (alive: ${inNamespace.filter(isAlive).join(', ')})`,
  })
})
