// `npm test`: runs tap against TEST_DATABASE_URL when it is set; otherwise starts an embedded
// PostgreSQL for the run (so the suite works on a machine with nothing installed) and stops it after.
import { spawn } from 'node:child_process';
import { startEmbeddedPostgres } from '../example/embedded.js';

async function main(): Promise<number> {
  let stop = async (): Promise<void> => {};
  const env = { ...process.env };
  if (!env.TEST_DATABASE_URL) {
    const embedded = await startEmbeddedPostgres({ persistent: false });
    env.TEST_DATABASE_URL = embedded.url;
    stop = embedded.stop;
    console.log(`# embedded PostgreSQL at ${embedded.url.replace(/:[^:@/]*@/, ':***@')}`);
  }
  try {
    const tap = spawn('tap', process.argv.slice(2), { stdio: 'inherit', env, shell: process.platform === 'win32' });
    return await new Promise<number>((resolve) => tap.on('close', (code) => resolve(code ?? 1)));
  } finally {
    await stop();
  }
}

main().then((code) => process.exit(code), (error) => {
  console.error(error);
  process.exit(1);
});
