import { startServer } from '/work/wt/console/test/helpers/server.ts';
import { launchBrowser } from '/work/wt/console/test/helpers/browser.ts';
import fs from 'node:fs';
const s = await startServer();
const creds = JSON.parse(fs.readFileSync(s.dataDir + '/admin-credentials.json', 'utf8'));
const b = await launchBrowser();
try {
  const { page } = await b.page();
  await page.goto(`http://127.0.0.1:${s.port}/`);
  await page.getByLabel('Username').fill('admin');
  await page.getByRole('textbox', { name: 'Password' }).fill(creds.password);
  await page.getByRole('button', { name: 'Log in' }).click();
  await page.getByRole('heading', { name: 'Security groups' }).waitFor();
  await page.locator('[data-group="default"] a').click();
  await page.getByTestId('group-name').waitFor();
  const html = await page.locator('form').first().evaluate((f) => f.outerHTML);
  console.log(html.slice(0, 3000));
  console.log(await page.accessibility?.snapshot?.());
} finally { await b.close(); await s.stop(); }
