import { startServer } from '/work/wt/console/test/helpers/server.ts';
import { launchBrowser } from '/work/wt/console/test/helpers/browser.ts';
import fs from 'node:fs';
const s = await startServer();
const creds = JSON.parse(fs.readFileSync(s.dataDir + '/admin-credentials.json', 'utf8'));
const b = await launchBrowser();
try {
  const { page } = await b.page();
  page.on('console', (m) => console.log('console:', m.type(), m.text()));
  page.on('pageerror', (e) => console.log('pageerror:', e.message));
  await page.goto(`http://127.0.0.1:${s.port}/`);
  await page.screenshot({ path: '/tmp/shots/login.png' });
  await page.getByLabel('Username').fill('admin');
  await page.getByRole('textbox', { name: 'Password' }).fill(creds.password);
  await page.getByRole('button', { name: 'Log in' }).click();
  await page.getByRole('heading', { name: 'Security groups' }).waitFor();
  await page.waitForTimeout(1000);
  await page.screenshot({ path: '/tmp/shots/groups.png' });
} finally { await b.close(); await s.stop(); }
