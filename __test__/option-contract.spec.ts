/**
 * One declaration per option: the generated `GroupOptions` and `SupervisorOptions`
 * (crates/baton-contract/src/options.rs → native/index.d.cts) are the lists. Every group
 * option must be (a) a `baton start` flag documented in `baton --help` and parsed, or
 * listed in NOT_CLI_OPTIONS with its reason (src/cli/group-flags.ts), (b) accepted in a
 * `baton.config.mjs` group, and (c) shown, resolved, in the group's status `options`. Every
 * fleet option likewise: a flag (FLEET_FLAGS) or a reason (NOT_CLI_FLEET_OPTIONS), a
 * config file key (CONFIG_FILE_OPTIONS, src/master/config-file.ts) or a reason
 * (NOT_CONFIG_FILE_OPTIONS), and shown in the status's `options`. An option added to the
 * Rust types without those fails here.
 */
import test, { type ExecutionContext } from 'ava'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import ts from 'typescript'
import { FLEET_FLAGS, GROUP_FLAGS, NOT_CLI_FLEET_OPTIONS, NOT_CLI_OPTIONS } from '../src/cli/group-flags.js'
import { CONFIG_FILE_OPTIONS, NOT_CONFIG_FILE_OPTIONS } from '../src/master/config-file.js'
import { Supervisor } from '../src/index.js'
import { runCli, startFleet } from './helpers/fleet.js'
import { freePort, tmpDir } from './helpers/processes.js'

/** The members of an interface in napi's generated declarations. */
function generatedMembers(name: 'GroupOptions' | 'SupervisorOptions'): string[] {
  const file = fileURLToPath(new URL('../native/index.d.cts', import.meta.url))
  const source = ts.createSourceFile(file, readFileSync(file, 'utf8'), ts.ScriptTarget.Latest)
  const names: string[] = []
  source.forEachChild((node) => {
    if (ts.isInterfaceDeclaration(node) && node.name.text === name)
      for (const m of node.members) if (m.name && ts.isIdentifier(m.name)) names.push(m.name.text)
  })
  return names
}

/** The members of `interface GroupOptions` in napi's generated declarations. */
function generatedGroupOptions(): string[] {
  return generatedMembers('GroupOptions')
}

/** A value of each option other than its default, and how the status shows it (when not as given). */
interface Sample {
  value: (dir: string, port: number) => unknown
  shown?: (dir: string, port: number) => unknown
}

/**
 * One non-default value per option. A new option needs one here: the checks below then
 * tell what else it lacks.
 */
const SAMPLES: Record<string, Sample> = {
  script: { value: (dir) => join(dir, 'worker.mjs') },
  count: { value: () => 2 },
  listen: { value: (_, port) => [`127.0.0.1:${port}`] },
  env: { value: () => ({ SAMPLE: 'secret' }), shown: () => ({ SAMPLE: '<hidden>' }) },
  args: { value: () => ['one', 'two'] },
  execArgv: { value: () => ['--no-warnings'] },
  cwd: { value: (dir) => dir },
  reloadable: { value: () => false },
  dropIn: { value: () => false },
  readiness: { value: () => 'message' },
  minUptime: { value: () => 200 },
  waitReady: { value: () => true },
  instanceVar: { value: () => 'WORKER_ID' },
  readyTimeout: { value: () => 5000 },
  stopTimeout: { value: () => 1500 },
  order: { value: () => 'stop-first' },
  parallel: { value: () => 2 },
  backlog: { value: () => 100 },
  balance: { value: () => 'shared' },
  uid: { value: () => 0, shown: () => '0' },
  gid: { value: () => 0, shown: () => '0' },
  stdout: { value: (dir) => join(dir, 'out.log') },
  stderr: { value: () => 'ignore' },
  logPrefix: { value: () => true },
  logTime: { value: () => true },
  logFormat: { value: () => 'json' },
  logMaxSize: { value: () => '10M' },
  logMaxFiles: { value: () => 3 },
  // January 1st, 00:00: never fires while the test runs.
  cronRestart: { value: () => '0 0 1 1 *' },
  // Far above what an idle worker uses: never replaced while the test runs.
  maxMemory: { value: () => '1.5G' },
}

/** A worker that is ready by message (the samples' readiness) and stays up. */
const WORKER = `process.send?.('ready')\nsetInterval(() => {}, 1 << 30)\n`

type GroupStatus = { name: string; options?: Record<string, unknown> }

test('every generated group option has a sample, and a documented CLI flag or a reason in one table', async (t) => {
  const options = generatedGroupOptions()
  t.true(options.length >= 20, `read the generated GroupOptions: ${options.join(', ')}`)
  const flags: Record<string, { flag: string }> = GROUP_FLAGS
  const reasons: Record<string, string> = NOT_CLI_OPTIONS
  const help = await runCli(['--help'], {})
  for (const option of options) {
    t.truthy(SAMPLES[option], `${option}: add a sample value to SAMPLES in this file`)
    const inFlags = option in flags
    const inReasons = option in reasons
    t.true(
      inFlags !== inReasons,
      `${option}: give it a baton start flag (GROUP_FLAGS) or the reason it has none (NOT_CLI_OPTIONS), in src/cli/group-flags.ts, not both`,
    )
    const flag = flags[option]?.flag
    if (flag !== undefined)
      t.true(
        help.stdout.includes(flag),
        `${option}: ${flag} is not documented in baton --help (USAGE, src/cli/main.ts)`,
      )
  }
  for (const option of [...Object.keys(flags), ...Object.keys(reasons)])
    t.true(options.includes(option), `${option} is in src/cli/group-flags.ts but not a generated group option`)
})

/** The status of the one group, checked against every sample (`except`: options the run did not set). */
function checkShown(
  t: ExecutionContext,
  group: GroupStatus | undefined,
  dir: string,
  port: number,
  only: string[],
  how: string,
): void {
  const shown = group?.options
  if (!shown) return void t.fail(`${how}: the group's status has no options: ${JSON.stringify(group)}`)
  for (const option of generatedGroupOptions()) {
    t.true(option in shown, `${how}: ${option} is not in the group's status options`)
    const sample = SAMPLES[option]
    if (!sample || !only.includes(option)) continue
    t.deepEqual(shown[option], (sample.shown ?? sample.value)(dir, port), `${how}: ${option}`)
  }
}

test('a baton.config.mjs group takes every option, and the status shows each resolved', async (t) => {
  const dir = await tmpDir('baton-contract-')
  t.teardown(() => dir.cleanup())
  writeFileSync(join(dir.path, 'worker.mjs'), WORKER)
  const port = await freePort()
  const group: Record<string, unknown> = {}
  for (const option of generatedGroupOptions()) {
    const sample = SAMPLES[option]
    if (sample) group[option] = sample.value(dir.path, port)
  }
  writeFileSync(
    join(dir.path, 'baton.config.mjs'),
    `export default ${JSON.stringify({ name: 'fleet', groups: { web: group } })}\n`,
  )
  const fleet = await startFleet(t, { cwd: dir.path, expectWorkers: 2 })
  const status = (await fleet.status()) as unknown as { groups: GroupStatus[] }
  checkShown(t, status.groups[0], dir.path, port, Object.keys(SAMPLES), 'config file')
})

test('baton start takes every GROUP_FLAGS option as its flag, and the status shows each resolved', async (t) => {
  const dir = await tmpDir('baton-contract-')
  t.teardown(() => dir.cleanup())
  writeFileSync(join(dir.path, 'worker.mjs'), WORKER)
  const port = await freePort()
  const flags: string[] = []
  for (const [option, { flag, takes }] of Object.entries(GROUP_FLAGS)) {
    if (option === 'count') continue // startFleet gives --count
    const value = SAMPLES[option]?.value(dir.path, port)
    if (takes === true || takes === false) {
      t.is(value, takes, `${option}: the sample is what ${flag} sets`)
      flags.push(flag)
    } else if (Array.isArray(value)) flags.push(...value.flatMap((v) => [flag, String(v)]))
    else flags.push(flag, String(value))
  }
  const fleet = await startFleet(t, { script: join(dir.path, 'worker.mjs'), count: 2, cwd: dir.path, flags })
  const status = (await fleet.status()) as unknown as { groups: GroupStatus[] }
  checkShown(t, status.groups[0], dir.path, port, Object.keys(GROUP_FLAGS), 'baton start flags')
})

/**
 * One non-default value per fleet option, as given to the API, and how the status's
 * `options` shows it (when not as given). `groups` shows as the status's `groups`.
 */
const FLEET_SAMPLES: Record<string, Sample> = {
  name: { value: () => 'contract-fleet' },
  runtimeDir: { value: (dir) => dir },
  groups: { value: (dir) => ({ web: { script: join(dir, 'worker.mjs'), count: 1 } }) },
  handleSignals: { value: () => false },
  backoff: { value: () => ({ initial: 50 }), shown: () => ({ initial: 50, max: 30000, resetAfter: 10000 }) },
  health: { value: () => 'tcp://127.0.0.1:0', shown: () => '127.0.0.1:0' },
  healthDetail: { value: () => true },
  logFile: { value: (dir) => join(dir, 'master.log') },
  upgradeCommand: { value: () => [process.execPath, 'next-master.mjs'] },
  logTime: { value: () => true },
  logFormat: { value: () => 'json' },
  logMaxSize: { value: () => '10M' },
  logMaxFiles: { value: () => 3 },
}

test('every generated fleet option has a sample, a documented CLI flag or a reason, and a config key or a reason', async (t) => {
  const options = generatedMembers('SupervisorOptions')
  t.true(options.length >= 10, `read the generated SupervisorOptions: ${options.join(', ')}`)
  const flags: Record<string, { flag: string }> = FLEET_FLAGS
  const reasons: Record<string, string> = NOT_CLI_FLEET_OPTIONS
  const fileKeys: readonly string[] = CONFIG_FILE_OPTIONS
  const notInFile: Record<string, string> = NOT_CONFIG_FILE_OPTIONS
  const help = await runCli(['--help'], {})
  for (const option of options) {
    t.truthy(FLEET_SAMPLES[option], `${option}: add a sample value to FLEET_SAMPLES in this file`)
    t.true(
      option in flags !== option in reasons,
      `${option}: give it a baton start flag (FLEET_FLAGS) or the reason it has none (NOT_CLI_FLEET_OPTIONS), in src/cli/group-flags.ts, not both`,
    )
    const flag = flags[option]?.flag
    if (flag !== undefined) t.true(help.stdout.includes(flag), `${option}: ${flag} is not documented in baton --help`)
    t.true(
      fileKeys.includes(option) !== option in notInFile,
      `${option}: accept it in a config file (CONFIG_FILE_OPTIONS) or give the reason it is not (NOT_CONFIG_FILE_OPTIONS), in src/master/config-file.ts, not both`,
    )
  }
  for (const option of [...Object.keys(flags), ...Object.keys(reasons), ...fileKeys, ...Object.keys(notInFile)])
    t.true(options.includes(option), `${option} is in a table of fleet options but not a generated fleet option`)
})

test('new Supervisor() takes every fleet option, and the status shows each as checked', async (t) => {
  const dir = await tmpDir('baton-contract-fleet-')
  t.teardown(() => dir.cleanup())
  writeFileSync(join(dir.path, 'worker.mjs'), WORKER)
  const options: Record<string, unknown> = { log: false }
  for (const option of generatedMembers('SupervisorOptions')) {
    const sample = FLEET_SAMPLES[option]
    if (sample) options[option] = sample.value(dir.path, 0)
  }
  const sup = new Supervisor(options)
  t.teardown(() => sup.stop({ force: true }))
  await sup.start()
  const status = sup.status()
  const shown = status.options as unknown as Record<string, unknown>
  for (const option of generatedMembers('SupervisorOptions')) {
    const sample = FLEET_SAMPLES[option]
    if (!sample) continue
    if (option === 'groups') {
      t.deepEqual(
        status.groups.map((g) => g.name),
        ['web'],
        'groups: shown as the status groups',
      )
      t.false('groups' in shown, 'the groups are not repeated in options')
      continue
    }
    t.deepEqual(shown[option], (sample.shown ?? sample.value)(dir.path, 0), `${option} in the status options`)
  }
  await sup.stop()
})

test('baton start takes the fleet options of a config file and FLEET_FLAGS, and the status shows each', async (t) => {
  const dir = await tmpDir('baton-contract-fleet-')
  t.teardown(() => dir.cleanup())
  writeFileSync(join(dir.path, 'worker.mjs'), WORKER)
  const file: Record<string, unknown> = {}
  for (const option of CONFIG_FILE_OPTIONS) file[option] = FLEET_SAMPLES[option]?.value(dir.path, 0)
  // The helper finds the fleet by the name `fleet`; a relative log file is the file's.
  Object.assign(file, { name: 'fleet', logFile: 'from-file.log' })
  writeFileSync(join(dir.path, 'baton.config.mjs'), `export default ${JSON.stringify(file)}\n`)
  const expected = (option: string): unknown =>
    option === 'name'
      ? 'fleet'
      : option === 'logFile'
        ? join(dir.path, 'from-file.log')
        : (FLEET_SAMPLES[option]?.shown ?? FLEET_SAMPLES[option]?.value)?.(dir.path, 0)
  const fromFile = await startFleet(t, { cwd: dir.path, expectWorkers: 1 })
  const shown = ((await fromFile.status()) as unknown as { options: Record<string, unknown> }).options
  for (const option of CONFIG_FILE_OPTIONS)
    if (option !== 'groups')
      t.deepEqual(shown[option], expected(option), `config file: ${option} in the status options`)
  t.true(Array.isArray(shown.upgradeCommand), "the master's own command line")

  const flags: string[] = []
  for (const [option, { flag, takes }] of Object.entries(FLEET_FLAGS)) {
    if (option === 'name') continue // startFleet gives --name
    if (takes === true) flags.push(flag)
    else
      flags.push(
        flag,
        String(option === 'logFile' ? join(dir.path, 'from-flag.log') : FLEET_SAMPLES[option]?.value(dir.path, 0)),
      )
  }
  const fromFlags = await startFleet(t, { script: join(dir.path, 'worker.mjs'), count: 1, cwd: dir.path, flags })
  const byFlag = ((await fromFlags.status()) as unknown as { options: Record<string, unknown> }).options
  for (const option of Object.keys(FLEET_FLAGS))
    t.deepEqual(
      byFlag[option],
      option === 'logFile' ? join(dir.path, 'from-flag.log') : expected(option),
      `${FLEET_FLAGS[option as keyof typeof FLEET_FLAGS].flag}: ${option} in the status options`,
    )
})
