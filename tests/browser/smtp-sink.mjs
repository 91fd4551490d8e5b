// An SMTP server for the browser tests: keeps every message it receives as a file in a
// directory (argv[3]), listening on 127.0.0.1 at the port in argv[2]. Plain SMTP, no auth.

import { writeFile } from 'node:fs/promises';
import path from 'node:path';

import { SMTPServer } from 'smtp-server';

const [port, directory] = process.argv.slice(2);
let count = 0;

const server = new SMTPServer({
  authOptional: true,
  disabledCommands: ['STARTTLS', 'AUTH'],
  logger: false,
  onData(stream, session, callback) {
    const chunks = [];
    stream.on('data', (chunk) => chunks.push(chunk));
    stream.on('end', async () => {
      count += 1;
      const name = `${String(count).padStart(5, '0')}.eml`;
      await writeFile(path.join(directory, name), Buffer.concat(chunks));
      callback();
    });
  },
});

server.listen(Number(port), '127.0.0.1', () => {
  console.log(`smtp sink on 127.0.0.1:${port}, keeping mail in ${directory}`);
});

for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => server.close(() => process.exit(0)));
}
