/**
 * Numbers that the master's options, the CLI and the worker runtime must agree on, named
 * once. No imports: the worker runtime and the drop-in preload load this module too, and
 * what a worker loads stays small. The option defaults and ranges themselves are declared
 * in crates/baton-contract/src/options.rs (`MAX_WORKERS`, `DEFAULT_BACKLOG`, ...), which
 * validates every option; these copies serve `baton scale` and the worker runtime and must
 * stay equal to them.
 */

/** Most workers a group may have (`count`, `baton scale`), and most replaced at once (`parallel`). */
export const MAX_WORKERS = 1024

/** Default `stopTimeout`: milliseconds a stopping worker has before `SIGKILL`. */
export const DEFAULT_STOP_TIMEOUT_MS = 2000

/** Default `readyTimeout`: milliseconds a new worker has to become ready. */
export const DEFAULT_READY_TIMEOUT_MS = 30_000

/** Default listen backlog: Node's own default for `server.listen()`. */
export const DEFAULT_BACKLOG = 511
