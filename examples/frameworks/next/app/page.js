// A minimal Next.js app (app router: this page and app/api/version/route.js), no baton
// import, no env var for baton. Run it as a Next.js app is run, with `next start` under baton:
//   cd examples/frameworks/next && ../../../node_modules/.bin/next build
//   baton start ../../../node_modules/.bin/next --count 4 -- start -p 3000
// (in an app of your own: baton start node_modules/.bin/next --count 4 -- start -p 3000).
// Next's own SIGTERM handler runs after baton's drain (src/worker/app-signals.ts).
import { version } from '../../version.mjs'

// Rendered per request, so every worker answers with the version it started with.
export const dynamic = 'force-dynamic'

export default function Page() {
  return (
    <main>
      <h1>Hello from Next.js</h1>
      <p id="version">{version}</p>
      <p id="pid">{process.pid}</p>
    </main>
  )
}
