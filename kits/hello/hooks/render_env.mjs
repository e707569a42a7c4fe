// render_env(app, secrets) for the hello kit: the page title from the kit config, and a small
// JSON file in the workspace. The greeting secret needs no rendering: the runner gives every
// declared secret to the workload as an environment variable and as /run/secrets/NAME.
export function render_env(app, secrets) {
  const title = String(app.config?.title ?? 'hello')
  return {
    env: {HELLO_TITLE: title},
    files: [{path: '/workspace/hello.json', content: `${JSON.stringify({title, greeting: Boolean(secrets.HELLO_GREETING)})}\n`, mode: 0o644}],
  }
}
