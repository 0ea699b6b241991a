/** The streams a command talks through; tests pass their own, the CLI passes process.std*. */

export interface CommandInput extends NodeJS.ReadableStream {
  isTTY?: boolean;
  setRawMode?: (mode: boolean) => unknown;
}

export interface CommandOutput {
  write(text: string): unknown;
}

/** Exit codes: 0 done, 1 failed, 2 the command was used wrongly, 130 interrupted (Ctrl-C). */
export const EXIT_OK = 0;
export const EXIT_FAILURE = 1;
export const EXIT_USAGE = 2;
export const EXIT_INTERRUPTED = 130;

/** All of a stream as text (for --password-stdin). */
export async function readAll(input: NodeJS.ReadableStream): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of input) chunks.push(typeof chunk === 'string' ? Buffer.from(chunk) : (chunk as Buffer));
  return Buffer.concat(chunks).toString('utf8');
}

export class PromptInterrupted extends Error {
  constructor() {
    super('interrupted');
    this.name = 'PromptInterrupted';
  }
}

/**
 * Reads secrets from a terminal without echoing them: raw mode, one keystroke at a time, Enter ends a
 * line, Backspace edits, Ctrl-C/Ctrl-D (or the end of input) abort. Lines typed (or pasted) ahead of a prompt are kept for it.
 * Prompts go to `output` (stderr) so stdout stays clean for scripts.
 */
export class HiddenLineReader {
  private current = '';
  private readonly lines: string[] = [];
  private interrupted = false;
  private waiting: { resolve: (line: string) => void; reject: (e: Error) => void } | undefined;
  private readonly onData = (chunk: Buffer | string) => this.consume(chunk.toString());
  private readonly onEnd = () => {
    this.interrupted = true;
    this.deliver();
  };

  constructor(
    private readonly input: CommandInput,
    private readonly output: CommandOutput,
  ) {
    input.setRawMode?.(true);
    input.on('data', this.onData);
    input.on('end', this.onEnd);
    input.resume();
  }

  ask(prompt: string): Promise<string> {
    this.output.write(prompt);
    return new Promise((resolve, reject) => {
      this.waiting = {
        resolve: (line) => {
          this.output.write('\n');
          resolve(line);
        },
        reject: (e) => {
          this.output.write('\n');
          reject(e);
        },
      };
      this.deliver();
    });
  }

  /** Gives the terminal back as it was. */
  close(): void {
    this.input.removeListener('data', this.onData);
    this.input.removeListener('end', this.onEnd);
    this.input.setRawMode?.(false);
    this.input.pause();
  }

  private consume(text: string): void {
    for (const char of text) {
      if (char === '\r' || char === '\n') {
        this.lines.push(this.current);
        this.current = '';
      } else if (char === '\u0003' || char === '\u0004') {
        this.interrupted = true;
      } else if (char === '\u007f' || char === '\b') {
        this.current = [...this.current].slice(0, -1).join('');
      } else if (char >= ' ') {
        this.current += char;
      }
    }
    this.deliver();
  }

  private deliver(): void {
    if (!this.waiting) return;
    const waiting = this.waiting;
    if (this.lines.length > 0) {
      this.waiting = undefined;
      waiting.resolve(this.lines.shift()!);
    } else if (this.interrupted) {
      this.waiting = undefined;
      waiting.reject(new PromptInterrupted());
    }
  }
}
