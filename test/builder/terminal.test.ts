// What `build` shows on a real terminal (a pseudo-terminal from script(1)): one live line per
// step and its one-line result, mmdebstrap's own chatter only with --verbose, a failed step's
// last lines; and that logs (no terminal) keep their plain lines.
import {mkdtempSync} from 'node:fs'
import {tmpdir} from 'node:os'
import path from 'node:path'
import {describe, expect, it} from 'vitest'
import {finalLines, onTerminal, runCli} from '../helpers/cli.js'
import {brokenHelloKit} from '../helpers/toolchain.js'

const mmdebstrapChatter = /^\s*[IW]: /m

describe('build on a terminal', () => {
  const home = mkdtempSync(path.join(tmpdir(), 'aegis-kit-terminal-'))

  it("shows each step live and then its result, without mmdebstrap's own lines", async () => {
    const {exitCode, screen} = await onTerminal(['build', 'hello'], home)
    expect(exitCode, screen).toBe(0)
    expect(screen).not.toMatch(mmdebstrapChatter)
    expect(screen).not.toContain('finding correct signed-by value')
    expect(screen).toMatch(/\x1b\[K[⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏] base: debian bookworm \(extract \+ busybox-static\)\s+\d+\.\ds/)
    const lines = finalLines(screen).filter((line) => line !== '' && !line.startsWith('warning:'))
    expect(lines).toEqual([
      expect.stringMatching(
        /^base: debian bookworm \(extract \+ busybox-static\): layer sha256:[0-9a-f]{12} .*, built in \d+\.\ds$/,
      ),
      expect.stringMatching(/^files: www → \/srv\/www: layer sha256:[0-9a-f]{12} .*, built in/),
      expect.stringMatching(/^aegis: workspace mount point: layer sha256:[0-9a-f]{12} /),
      expect.stringMatching(
        /^built hello:0\.1\.0 sha256:[0-9a-f]{12} .*, created \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ \(the kit's last commit\)$/,
      ),
    ])
  }, 300_000)

  it("shows the tools' own output with --verbose", async () => {
    const {exitCode, screen} = await onTerminal(['build', 'hello', '--no-cache', '--verbose'], home)
    expect(exitCode, screen).toBe(0)
    expect(finalLines(screen)).toContain('  I: finding correct signed-by value...')
    expect(
      finalLines(screen)
        .filter((line) => line !== '')
        .at(-1),
    ).toMatch(/^built hello:0\.1\.0 /)
  }, 300_000)

  it("shows a failed step's last lines, then the error", async () => {
    const kit = brokenHelloKit()
    const {exitCode, screen} = await onTerminal(['build', kit], home)
    expect(exitCode).toBe(1)
    const lines = finalLines(screen)
    const failed = lines.findIndex((line) =>
      /^base: .*no-such-package-aegis-kit.*: failed after \d+\.\ds; its output before the error:$/.test(line),
    )
    expect(failed, screen).toBeGreaterThan(-1)
    expect(lines.slice(failed + 1)).toContain('  I: running apt-get update...')
    const error = lines.findIndex((line) => line.startsWith('Error: mmdebstrap failed'))
    expect(error).toBeGreaterThan(failed)
    // The error quotes the tool's last lines itself; they are not printed twice.
    expect(lines.filter((line) => line.includes('E: Unable to locate package no-such-package-aegis-kit'))).toHaveLength(
      1,
    )
  }, 300_000)

  it('prints plain lines when stderr is not a terminal, as before', async () => {
    const result = await runCli(['build', 'hello'], {env: {AEGIS_KIT_HOME: home}})
    expect(result.exitCode).toBe(0)
    expect(result.stderr).toMatch(
      /^base: debian bookworm \(extract \+ busybox-static\)\n {2}layer sha256:[0-9a-f]{12} .*, cached$/m,
    )
    expect(result.stderr).not.toMatch(/[\r\x1b⠋]/)
    expect(result.stderr).not.toMatch(mmdebstrapChatter)
  }, 120_000)
})
