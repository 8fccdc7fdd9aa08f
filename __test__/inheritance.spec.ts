/**
 * What workers inherit, and what they do not (issue 9): a worker shares with the master
 * only its stdio and its listening sockets (fd 3..); its control channel is its own end
 * of a socketpair; no other master fd (control socket, pid file, other slots' sockets,
 * other workers' pipes) reaches it; and a worker's own children get nothing but fds 0-2.
 * Spawning never goes through a shell: a script path and arguments full of shell syntax
 * are passed to execve as they are.
 */
import test from 'ava'
import { copyFileSync, existsSync, readdirSync } from 'node:fs'
import { join } from 'node:path'
import { fixture, startFleet } from './helpers/fleet.js'
import { httpGet } from './helpers/http.js'
import { fdTargets } from '../harness/proc.mjs'
import { freePort, isAlive, ProcessTracker, tmpDir, waitFor } from './helpers/processes.js'

/**
 * Targets that name one kernel object or file: anon inodes all look alike, and every Node
 * process opens devices for itself (/dev/null; Node 24 also /dev/urandom), so the same
 * device path in both processes says nothing about a shared fd.
 */
const comparable = (target: string): boolean => !target.startsWith('anon_inode:') && !target.startsWith('/dev/')

test('a worker shares only its stdio and listening sockets with the master, and its children get only fds 0-2', async (t) => {
  const port = await freePort()
  const fleet = await startFleet(t, { script: fixture('inherit-probe.mjs'), count: 2, listen: [`127.0.0.1:${port}`] })
  const master = fdTargets(fleet.pid)
  const masterTargets = new Set([...master.values()].filter(comparable))
  const pids = await fleet.workerPids()
  for (const pid of pids) {
    const worker = fdTargets(pid)
    const shared = [...worker].filter(([, target]) => comparable(target) && masterTargets.has(target)).map(([fd]) => fd)
    // 0-2 stdio, 3 its slot's listening socket (LISTEN_FDS=1), 4 the control channel.
    t.true(
      shared.every((fd) => fd <= 3),
      `worker ${pid} shares fds ${shared.join(',')} with the master: ${JSON.stringify([...worker])}`,
    )
    t.true(shared.includes(3), "the listening socket is the master's own")
    t.regex(worker.get(4) ?? '', /^socket:/, 'fd 4 is the control channel')
    t.false(masterTargets.has(worker.get(4) ?? ''), "the control channel is the worker's own end")
    t.false(
      [...worker.values()].some((v) => v.endsWith('.sock') || v.endsWith('.pid')),
      'no control socket or pid file',
    )
  }
  // The other slot's socket is not in a worker: each has exactly one socket of the master.
  const listenSockets = pids.map((p) => fdTargets(p).get(3))
  t.not(listenSockets[0], listenSockets[1], 'reuseport: each slot its own socket')

  // A child of a worker: only 0-2 (Node marks inherited fds >= 3 close-on-exec at start-up).
  const tracker = new ProcessTracker()
  t.teardown(() => tracker.killAll())
  const child = Number((await httpGet({ port, path: '/child' })).body)
  tracker.trackPid(child)
  await waitFor(() => isAlive(child), { message: 'the grandchild runs' })
  const grand = fdTargets(child)
  t.deepEqual(
    [...grand.keys()].filter((fd) => fd <= 2).sort(),
    [0, 1, 2],
    `the worker's child has ${JSON.stringify([...grand])}`,
  )
  // Beyond 0-2 only what the worker's own Node opened without close-on-exec may follow:
  // Node 24's OpenSSL keeps /dev/urandom open that way. No socket, pipe or file of baton's.
  const extra = [...grand].filter(([fd]) => fd > 2)
  t.true(
    extra.every(([, target]) => target.startsWith('/dev/')),
    `the worker's child has ${JSON.stringify([...grand])}`,
  )
})

test('spawning never goes through a shell: a script name and arguments with ; $() | && are run literally', async (t) => {
  const dir = await tmpDir('baton-shell-')
  t.teardown(() => dir.cleanup())
  // A plain script (no import of baton, so it runs from any directory) with a hostile name.
  const script = join(dir.path, "a b;$(touch pwned1)`touch pwned2`'.mjs")
  copyFileSync(fixture('plain-argv.mjs'), script)
  const args = ['$(touch pwned3)', ';', 'touch pwned4', '|', '&&', "'quoted'", '"x y"', '*']
  const port = await freePort()
  const fleet = await startFleet(t, { script, cwd: dir.path, count: 1, listen: [`127.0.0.1:${port}`], args })
  const argv = JSON.parse((await httpGet({ port, path: '/' })).body) as string[]
  t.deepEqual(argv, [script, ...args])
  t.deepEqual(
    readdirSync(dir.path).filter((f) => f.startsWith('pwned')),
    [],
    'nothing was run by a shell',
  )
  t.false(existsSync(join(process.cwd(), 'pwned1')))
  t.is((await fleet.cli(['stop', fleet.name])).code, 0)
})
