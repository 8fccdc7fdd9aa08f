/**
 * One declaration per group option: the generated `GroupOptions`
 * (crates/baton-contract/src/options.rs → native/index.d.cts) is the list. Every option in
 * it must be (a) a `baton start` flag documented in `baton --help` and parsed, or listed in
 * NOT_CLI_OPTIONS with its reason (src/cli/group-flags.ts), (b) accepted in a
 * `baton.config.mjs` group, and (c) shown, resolved, in the group's status `options`. An
 * option added to the Rust type without those fails here.
 */
import test, { type ExecutionContext } from 'ava'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import ts from 'typescript'
import { GROUP_FLAGS, NOT_CLI_OPTIONS } from '../src/cli/group-flags.js'
import { runCli, startFleet } from './helpers/fleet.js'
import { freePort, tmpDir } from './helpers/processes.js'

/** The members of `interface GroupOptions` in napi's generated declarations. */
function generatedGroupOptions(): string[] {
  const file = fileURLToPath(new URL('../native/index.d.cts', import.meta.url))
  const source = ts.createSourceFile(file, readFileSync(file, 'utf8'), ts.ScriptTarget.Latest)
  const names: string[] = []
  source.forEachChild((node) => {
    if (ts.isInterfaceDeclaration(node) && node.name.text === 'GroupOptions')
      for (const m of node.members) if (m.name && ts.isIdentifier(m.name)) names.push(m.name.text)
  })
  return names
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
