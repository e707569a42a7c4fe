/**
 * Text from outside (archive entry names, registry error messages, what a hook returns) may hold
 * terminal escape sequences that retitle the window, clear the screen or hide what follows. Before
 * such text is printed, its control characters are shown as `\xNN` instead of being sent to the
 * terminal: the user still sees that something odd was there, and the terminal obeys none of it.
 * Applied to every error message the CLI prints (BaseCommand), to registry error bodies as they are
 * read, and to hook warnings and validate_config problems as they come back from the hook.
 */

/**
 * C0 controls, DEL and C1 controls (0x80-0x9f: 0x9b is a one-byte CSI). Tab and newline are kept
 * only in multi-line text; carriage return never is, since it lets a line overwrite itself.
 */
const CONTROL_CHARACTERS = /[\x00-\x1f\x7f-\x9f]/g
const CONTROL_CHARACTERS_BUT_LAYOUT = /[\x00-\x08\x0b-\x1f\x7f-\x9f]/g

export function printable(text: string, options: {multiline?: boolean} = {}): string {
  const pattern = options.multiline ? CONTROL_CHARACTERS_BUT_LAYOUT : CONTROL_CHARACTERS
  return text.replace(pattern, (character) => `\\x${character.charCodeAt(0).toString(16).padStart(2, '0')}`)
}
