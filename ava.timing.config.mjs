// The timed tests (speed comparisons), run alone after the suite: `npm test` runs
// `ava --config ava.timing.config.mjs` once the main ava run has passed.
export default {
  files: ['__test__/parallel-speed.spec.ts'],
  extensions: { ts: 'module' },
  nodeArguments: ['--import=tsx'],
  workerThreads: false,
  timeout: '2m',
}
