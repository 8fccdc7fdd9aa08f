/**
 * `supervisor.runAll()` in the master: Workerman's `start [-d] | stop [-g] | restart |
 * reload | status` read from the script's own argv, and baton's `upgrade`.
 */
import { CommandError, reloadCommand, statusCommand, stdio, stopCommand, upgradeCommand } from './commands.js'
import { startDaemon } from './daemon.js'
import { defaultRuntimeDir, dirOfMaster, searchDirs } from '../runtime-dir.js'

/** What the commands need of the fleet: a `Supervisor` (kept structural so this module does not import supervisor.ts, which loads it lazily). */
export interface ScriptFleet {
  /** The fleet name (its control socket in the runtime dir). */
  readonly name: string
  /** The runtime dir of its control socket. */
  readonly runtimeDir: string
  /** Start the fleet in this process. */
  start(): Promise<void>
  /** Settles once the fleet has stopped. */
  readonly stopped: Promise<void>
}

const USAGE = 'usage: node <script> start [-d] | stop [-g] [--force] | restart | reload | upgrade | status [--json]'

/** Run one of the Workerman-style commands for `supervisor`; sets `process.exitCode`. */
export async function runScriptCommand(supervisor: ScriptFleet, argv: string[]): Promise<void> {
  const [command, ...flags] = argv
  const { name } = supervisor
  let code = 0
  try {
    // The default runtime dir: a fleet an older version started in an old place is found
    // there (stop, reload, status...); a new one always starts in the runtime dir.
    const runtimeDir =
      command !== 'start' && supervisor.runtimeDir === defaultRuntimeDir()
        ? dirOfMaster(searchDirs(stdio.err), name)
        : supervisor.runtimeDir
    switch (command) {
      case 'start':
        if (flags.includes('-d') || flags.includes('--daemon')) {
          const args = [
            ...process.execArgv,
            process.argv[1],
            'start',
            ...flags.filter((f) => f !== '-d' && f !== '--daemon'),
          ]
          const pid = await startDaemon(args.slice(process.execArgv.length), name, runtimeDir)
          stdio.out(`"${name}" started in the background (master pid ${pid})`)
        } else {
          await supervisor.start()
          await supervisor.stopped
        }
        break
      case 'stop':
        code = await stopCommand(runtimeDir, name, flags.includes('--force'))
        break
      case 'restart':
        code = await stopCommand(runtimeDir, name, false)
        if (code === 0) {
          const pid = await startDaemon([process.argv[1], 'start'], name, supervisor.runtimeDir)
          stdio.out(`"${name}" restarted in the background (master pid ${pid})`)
        }
        break
      case 'reload':
        code = await reloadCommand(runtimeDir, name)
        break
      case 'upgrade':
        code = await upgradeCommand(runtimeDir, name)
        break
      case 'status':
        code = await statusCommand(runtimeDir, name, flags.includes('--json'))
        break
      default:
        stdio.err(USAGE)
        code = 2
    }
  } catch (e) {
    stdio.err(`baton: ${(e as Error).message}`)
    code = e instanceof CommandError ? e.exitCode : 1
  }
  process.exitCode = code
}
