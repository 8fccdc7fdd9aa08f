/**
 * The app's own `SIGTERM` listeners, delivered after baton's drain.
 *
 * The master stops a worker with its stop message and `SIGTERM`. An app that handles
 * `SIGTERM` itself (`process.on('SIGTERM', () => server.close(() => process.exit(0)))`,
 * close-with-grace, NestJS's shutdown hooks, Next.js) would close its server (cutting idle
 * keep-alive connections) and exit while baton's drain is still answering with
 * `Connection: close`: clients see resets. So in a baton worker the listeners the app adds
 * for `SIGTERM` are wrapped: while the worker runtime (worker.ts) runs a graceful stop they
 * are held, and the runtime releases them once the drain has finished (or shortly before
 * its stop deadline). Then they run, once, with `'SIGTERM'`, and the app's own cleanup ends
 * the process; the runtime's deadline still bounds the stop. The cleanup may close the
 * server baton already stopped (drain.ts makes that `close(cb)` succeed), and an exit with
 * 143 ("terminated by SIGTERM", Next.js's) after the drain counts as the clean stop it is:
 * the worker exits 0 (worker.ts).
 *
 * Without the runtime (an app that never listens on a port baton gives it), nothing is
 * held: the listeners run when the signal arrives, as in plain Node. `listeners()`,
 * `removeListener()` and `off()` see the app's functions (each wrapper carries `.listener`,
 * as Node's `once` wrappers do).
 *
 * Installed by preload.ts (before the app's code runs) and by worker.ts in a baton worker.
 * @internal
 * @module
 */

type Listener = (...args: unknown[]) => void
/** A wrapper around an app listener; `listener` lets Node's removeListener find it. */
type Wrapper = Listener & { listener: Listener; once: boolean }

const SIGNAL = 'SIGTERM'

/** `idle`: deliver at once; `holding`: a stop runs, hold; `released`: delivered. */
let state: 'idle' | 'holding' | 'released' = 'idle'
/** The master's SIGTERM arrived while held. */
let arrived = false
/** Released before the signal arrived: the one that is on its way is not delivered twice. */
let swallowNext = false
/** App listeners were called by {@link releaseAppSignals}. */
let handed = false
let installed = false

/** Every wrapper made by {@link wrap}. */
const wrappers = new WeakSet<Wrapper>()
/** Listeners of the runtime itself, never wrapped. */
const ownListeners = new WeakSet<Listener>()

function isWrapper(l: unknown): l is Wrapper {
  return typeof l === 'function' && wrappers.has(l as Wrapper)
}

function wrap(fn: Listener, once: boolean): Wrapper {
  const wrapper = function (this: unknown, ...args: unknown[]): void {
    // The runtime's own listener is called in this same emit and starts the stop (an app
    // that removed it, to handle SIGTERM alone, gets the signal at once).
    if (state === 'idle' && runtimeListens()) state = 'holding'
    if (state === 'holding') {
      arrived = true
      return
    }
    if (state === 'released' && swallowNext) return
    if (once) process.removeListener(SIGNAL, wrapper)
    fn.apply(this, args)
  } as Wrapper
  wrapper.listener = fn
  wrapper.once = once
  wrappers.add(wrapper)
  return wrapper
}

/**
 * Wrap every `SIGTERM` listener the app adds from now on (idempotent). Only call it in a
 * baton worker.
 */
export function installSignalDeferral(): void {
  if (installed) return
  installed = true
  type Method = (this: NodeJS.Process, event: string | symbol, fn: Listener) => NodeJS.Process
  const proc = process as unknown as Record<string, Method>
  // [method, the method that registers the wrapper, whether the listener runs once]
  const methods: Array<[string, string, boolean]> = [
    ['on', 'on', false],
    ['addListener', 'addListener', false],
    ['prependListener', 'prependListener', false],
    ['once', 'on', true],
    ['prependOnceListener', 'prependListener', true],
  ]
  const originals = new Map(methods.map(([name]) => [name, proc[name] as Method]))
  for (const [name, base, once] of methods) {
    const original = originals.get(name) as Method
    const register = originals.get(base) as Method
    proc[name] = function (this: NodeJS.Process, event: string | symbol, fn: Listener): NodeJS.Process {
      if (event !== SIGNAL || typeof fn !== 'function' || isWrapper(fn) || ownListeners.has(fn))
        return original.call(this, event, fn)
      return register.call(this, event, wrap(fn, once))
    }
  }
}

/**
 * Register `fn` for `SIGTERM` as baton's own (never held). `fn` is told whether this is the
 * signal that a release already went ahead of (the master's, arriving late).
 */
export function addOwnSignalListener(fn: (late: boolean) => void): void {
  const own: Listener = () => {
    const late = swallowNext
    // Every listener has seen this signal once the emit is over.
    queueMicrotask(() => (swallowNext = false))
    fn(late)
  }
  ownListeners.add(own)
  process.on(SIGNAL, own)
}

/** Whether the app's listeners were handed the signal by {@link releaseAppSignals}. */
export function appSignalsHanded(): boolean {
  return handed
}

/** The app listeners currently registered for `SIGTERM`. */
function appWrappers(): Wrapper[] {
  return process.rawListeners(SIGNAL).filter(isWrapper)
}

/** Whether the app has `SIGTERM` listeners of its own. */
export function hasAppSignalListeners(): boolean {
  return appWrappers().length > 0
}

/** Whether the runtime's own `SIGTERM` listener is registered. */
function runtimeListens(): boolean {
  return process.rawListeners(SIGNAL).some((l) => ownListeners.has(l as Listener))
}

/** The runtime's graceful stop started: hold the app's listeners until released. */
export function holdAppSignals(): void {
  if (state === 'idle') state = 'holding'
}

/**
 * The drain is over (or the deadline is near): call the app's `SIGTERM` listeners once,
 * whether or not the signal has arrived yet. Returns true if the app has listeners that
 * were handed the signal (now or before): their cleanup is to end the process.
 */
export function releaseAppSignals(): boolean {
  if (state !== 'holding') return handed
  state = 'released'
  const list = appWrappers()
  if (list.length === 0) return false
  handed = true
  swallowNext = !arrived
  for (const w of list) {
    if (w.once) process.removeListener(SIGNAL, w)
    try {
      w.listener.call(process, SIGNAL)
    } catch (err) {
      // As an exception thrown by a signal listener would: uncaught.
      queueMicrotask(() => {
        throw err
      })
    }
  }
  return true
}
