// What the browser scripts share: Debian's Chromium through playwright-core (from
// BERTH_UI_TOOLS, where scripts/install-deps.sh puts it), a login, screenshots.
import { createRequire } from 'node:module';
import path from 'node:path';
import fs from 'node:fs';

export const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(k + ' is not set');
  return v;
};
export const TIMEOUT = 30000;
export const step = (s) => console.log('ok: ' + s);

// The flags of the machine notes: no background networking on a closed network.
export async function launch() {
  const require = createRequire(path.join(env('BERTH_UI_TOOLS'), 'package.json'));
  const { chromium } = require('playwright-core');
  return chromium.launch({
    executablePath: process.env.BERTH_CHROMIUM || '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
}

// A new browser context logged in with `token` at `url`; dialogs are accepted.
export async function login(browser, url, token, viewport) {
  const ctx = await browser.newContext({ viewport: viewport || { width: 1280, height: 800 } });
  const page = await ctx.newPage();
  page.setDefaultTimeout(TIMEOUT);
  page.on('dialog', (d) => d.accept());
  page.on('pageerror', (e) => console.log('page error: ' + e.message));
  await page.goto(url + '/ui/');
  await page.waitForURL(/\/ui\/login$/);
  await page.fill('#token', token);
  await page.press('#token', 'Enter');
  await page.waitForURL(/\/ui\/(#.*)?$/);
  return { ctx, page };
}

// A screenshot of the whole page as BERTH_UI_SHOTS/<name>.png; `viewportOnly`: what a
// screen of the page's viewport shows (the README's picture).
export async function shot(page, name, viewportOnly) {
  const dir = env('BERTH_UI_SHOTS');
  fs.mkdirSync(dir, { recursive: true });
  const file = path.join(dir, name + '.png');
  await page.screenshot({ path: file, fullPage: !viewportOnly });
  console.log('screenshot: ' + file);
}
