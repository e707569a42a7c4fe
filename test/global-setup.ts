import {mkdtempSync, readFileSync, rmSync} from 'node:fs'
import {tmpdir} from 'node:os'
import path from 'node:path'

/**
 * Every temporary directory the tests make (stores, OpenClaw homes, unpacked roots: several GB
 * per run) goes under one directory per run, removed when the run ends, so a long-lived machine's
 * /tmp does not fill up. Test workers are forked after this runs and inherit TMPDIR.
 */
export default function setup(): () => void {
  const runDir = mkdtempSync(path.join(tmpdir(), 'aegis-kit-test-run-'))
  process.env.TMPDIR = runDir
  return () => {
    if (process.env.AEGIS_KIT_KEEP_TEST_TMP) {
      console.log(`test temporary files kept in ${runDir}`)
      return
    }
    // A test killed mid-build could leave a mount under it (a bind of the host's /dev/shm, say):
    // removing through it would delete the host's files, so such a directory is kept.
    const mounted = readFileSync('/proc/self/mountinfo', 'utf8')
      .split('\n')
      .map((line) => line.split(' ')[4])
      .filter((point) => point?.startsWith(`${runDir}/`))
    if (mounted.length > 0) {
      console.log(`test temporary files kept in ${runDir}: mounts remain under it (${mounted.join(', ')})`)
      return
    }
    rmSync(runDir, {recursive: true, force: true})
  }
}
