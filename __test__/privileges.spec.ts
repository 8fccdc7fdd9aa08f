/**
 * Workers that run as another user (`uid`/`gid`, names or ids): the group comes from the
 * user database, root's groups are dropped, and the death signal survives the identity
 * change, so such workers end with a killed master. Needs root (CI runs as root).
 */
import test from 'ava'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { fixture, runCli, startFleet } from './helpers/fleet.js'
import { httpGet, portIsFree } from './helpers/http.js'
import { freePort, isAlive, tmpDir, waitFor } from './helpers/processes.js'
import { nobody } from '../harness/proc.mjs'

const asRoot = process.getuid?.() === 0 ? test : test.skip

/** The `Uid:`, `Gid:` and `Groups:` lines of /proc/<pid>/status, as numbers. */
function credentials(pid: number): { uid: number[]; gid: number[]; groups: number[] } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8')
  const line = (key: string) =>
    (status.split('\n').find((l) => l.startsWith(`${key}:`)) ?? '')
      .slice(key.length + 1)
      .trim()
      .split(/\s+/)
      .filter((x) => x !== '')
      .map(Number)
  return { uid: line('Uid'), gid: line('Gid'), groups: line('Groups') }
}

asRoot(
  'uid "nobody" without gid: the worker has nobody\'s group and none of root\'s, and ends within 3 s of a kill -9 of the master',
  async (t) => {
    const who = nobody()
    const dir = await tmpDir('baton-priv-')
    t.teardown(() => dir.cleanup())
    const port = await freePort()
    writeFileSync(
      join(dir.path, 'baton.config.json'),
      JSON.stringify({
        name: 'fleet',
        groups: { web: { script: fixture('plain-server.mjs'), count: 2, uid: 'nobody', listen: `127.0.0.1:${port}` } },
      }),
    )
    const fleet = await startFleet(t, { cwd: dir.path, expectWorkers: 2 })
    const pids = await fleet.workerPids()
    t.is(pids.length, 2)
    for (const pid of pids) {
      const c = credentials(pid)
      t.deepEqual(c.uid, [who.uid, who.uid, who.uid, who.uid], `uid of ${pid}`)
      t.deepEqual(c.gid, [who.gid, who.gid, who.gid, who.gid], `gid of ${pid}: nobody's group, not 0`)
      t.false(c.groups.includes(0), `supplementary groups of ${pid}: ${c.groups.join(' ')}`)
    }
    t.is((await httpGet({ port, path: '/' })).status, 200)

    process.kill(fleet.pid, 'SIGKILL')
    await fleet.exited
    // The workers never read their control channel: only the death signal ends them.
    await waitFor(() => pids.every((p) => !isAlive(p)), {
      timeoutMs: 3000,
      message: 'every worker gone within 3 s of the master',
    })
    await waitFor(() => portIsFree(port), { timeoutMs: 3000, message: 'the port is released' })
    t.pass()
  },
)

asRoot('uid and gid by id and by name; unknown names are errors that name the field', async (t) => {
  const who = nobody()
  const dir = await tmpDir('baton-priv-')
  t.teardown(() => dir.cleanup())
  const port = await freePort()
  const file = join(dir.path, 'baton.config.json')
  writeFileSync(
    file,
    JSON.stringify({
      name: 'fleet',
      groups: {
        web: { script: fixture('plain-server.mjs'), count: 1, uid: who.uid, gid: who.gid, listen: `127.0.0.1:${port}` },
      },
    }),
  )
  const fleet = await startFleet(t, { cwd: dir.path, expectWorkers: 1 })
  const [pid] = await fleet.workerPids()
  t.deepEqual(credentials(pid ?? -1).groups, [who.gid])
  t.is((await fleet.cli(['stop', fleet.name])).code, 0)

  const env = { BATON_RUNTIME_DIR: join(dir.path, 'rt') }
  writeFileSync(
    file,
    JSON.stringify({ groups: { web: { script: fixture('plain-server.mjs'), uid: 'no-such-user-xyz' } } }),
  )
  const badUser = await runCli(['start', '--config', file], env)
  t.is(badUser.code, 1, badUser.stderr)
  t.regex(badUser.stderr, /groups\.web\.uid: no user named "no-such-user-xyz"/)
  writeFileSync(file, JSON.stringify({ groups: { web: { script: fixture('plain-server.mjs'), uid: 3999999999 } } }))
  const noEntry = await runCli(['start', '--config', file], env)
  t.regex(
    noEntry.stderr,
    /uid: user id 3999999999 has no entry in the user database, so its group is unknown; set gid too/,
  )
  writeFileSync(
    file,
    JSON.stringify({
      groups: { web: { script: fixture('plain-server.mjs'), uid: 'nobody', gid: 'no-such-group-xyz' } },
    }),
  )
  const badGroup = await runCli(['start', '--config', file], env)
  t.regex(badGroup.stderr, /gid: no group named "no-such-group-xyz"/)
  writeFileSync(file, JSON.stringify({ groups: { web: { script: fixture('plain-server.mjs'), uid: 'a b' } } }))
  const badValue = await runCli(['start', '--config', file], env)
  t.is(badValue.code, 2)
  t.regex(badValue.stderr, /groups\.web\.uid: expected a numeric user id or a user name/)
})
