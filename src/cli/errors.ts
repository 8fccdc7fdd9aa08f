/** The CLI's own errors (a module of its own: commands.ts and log-files.ts both throw them). */

/** A usage or lookup error: printed, exit code 1 (2 for usage). */
export class CommandError extends Error {
  readonly exitCode: number
  constructor(message: string, exitCode = 1) {
    super(message)
    this.name = 'CommandError'
    this.exitCode = exitCode
  }
}
