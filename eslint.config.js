// ESLint (flat config), run by `npm run lint`: ESLint's and typescript-eslint's
// recommended rules for the TypeScript in src/ and __test__/, and ESLint's recommended
// rules for the test fixtures and the harness shared by tests and benchmarks (plain Node
// scripts). A rule is loosened only where the code
// has a deliberate reason, said next to it.
import js from '@eslint/js'
import { defineConfig } from 'eslint/config'
import globals from 'globals'
import tseslint from 'typescript-eslint'

export default defineConfig(
  {
    ignores: ['dist/', 'native/', 'npm/', 'target/', 'node_modules/', 'artifacts/', 'release/'],
  },
  {
    files: ['src/**/*.ts', '__test__/**/*.ts'],
    extends: [js.configs.recommended, tseslint.configs.recommended],
    languageOptions: { globals: globals.node },
    rules: {
      // Control characters in a regular expression are what this rule reports, and here
      // they are the point: the CLI makes worker-written control characters visible
      // (src/format.ts), unit files refuse them (src/cli/startup.ts), tests check both.
      'no-control-regex': 'off',
    },
  },
  {
    files: ['__test__/fixtures/**/*.{js,mjs,cjs}', 'harness/**/*.mjs'],
    extends: [js.configs.recommended],
    languageOptions: { globals: globals.node },
  },
)
