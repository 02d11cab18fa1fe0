// The web view end to end in headless Chromium (Debian's), driven by playwright-core from
// .tools/ui-tests (scripts/install-deps.sh). Started by tests/tests/ui.rs, which runs the
// agent and made the job `web` with tasks `live` (prints hello, then sleeps) and `fails`
// (exit 3). Prints `ok: <step>` per step; any failure exits non-zero with the reason.
//
// Environment: BERTH_URL, BERTH_TOKEN, BERTH_RO_TOKEN, BERTH_UI_SHOTS (screenshot folder),
// BERTH_UI_TOOLS (the folder with node_modules/playwright-core), BERTH_NODE_ID, BERTH_PULLED
// (an image the agent pulled from a registry).
import { env, launch, login as loginAt, shot, step, TIMEOUT } from './lib.mjs';

const url = env('BERTH_URL');
const nodeId = env('BERTH_NODE_ID');
const browser = await launch();
const login = (token, viewport) => loginAt(browser, url, token, viewport);

try {
  // A wrong token stays on the login page with an error.
  {
    const ctx = await browser.newContext();
    const page = await ctx.newPage();
    page.setDefaultTimeout(TIMEOUT);
    await page.goto(url + '/ui/login');
    await page.fill('#token', 'not-the-token-0123456789');
    await page.press('#token', 'Enter');
    await page.waitForSelector('#login-error');
    await shot(page, 'login');
    await ctx.close();
    step('a wrong token is refused at login');
  }

  const { ctx, page } = await login(env('BERTH_TOKEN'));
  const cookies = await ctx.cookies();
  const c = cookies.find((k) => k.name === 'berth_session');
  if (!c || !c.httpOnly || c.sameSite !== 'Strict' || c.path !== '/') {
    throw new Error('session cookie not HttpOnly/SameSite=Strict/Path=/: ' + JSON.stringify(c));
  }
  if (await page.evaluate(() => document.cookie.includes('berth_session'))) {
    throw new Error('the page script can read the session cookie');
  }
  step('login sets an HttpOnly, SameSite=Strict cookie');

  // The pool page: the node in the heatmap, its state as text, a count by state.
  await page.waitForSelector(`#heatmap a.cell[data-node="${nodeId}"]`);
  const cellText = await page.textContent(`#heatmap a.cell[data-node="${nodeId}"]`);
  if (!/idle|running/.test(cellText)) throw new Error('node cell without its state: ' + cellText);
  await page.waitForSelector('#node-counts li');
  await shot(page, 'pool');
  step('the pool page shows the node and its state');

  // Keyboard: Tab reaches the node cell and Enter opens the node page.
  await page.focus(`#heatmap a.cell[data-node="${nodeId}"]`);
  await page.keyboard.press('Enter');
  await page.waitForSelector('#node-state');
  // The pull of the registry's image (as pulled: with its tag), ended, with its layers.
  const pulled = env('BERTH_PULLED') + ':latest';
  await page.waitForSelector(`#pulls li[data-image="${pulled}"][data-state="pulled"]`);
  const pull = await page.textContent(`#pulls li[data-image="${pulled}"]`);
  if (!/layers (\d+)\/\1, /.test(pull)) throw new Error('the pull shows: ' + pull);
  await shot(page, 'node');
  step('the node page opens from the keyboard and shows the image pulls');

  // Its running task and the one it completed (Batch's recentTasks), each a link.
  await page.waitForSelector('#recent-tasks li[data-task="web/live"][data-state="running"]');
  const done = await page.textContent('#recent-tasks li[data-task="web/pulled"][data-state="completed"]');
  if (!done.includes('success, exit 0')) throw new Error('the completed task shows: ' + done);
  await page.click('#recent-tasks li[data-task="web/live"] a');
  await page.waitForFunction(() => location.hash === '#/task/web/live');
  step('the node page lists its running task and the one it completed, linked');

  // Jobs: the job with its task-count bar.
  await page.goto(url + '/ui/#/jobs');
  await page.waitForSelector('#jobs tr[data-job="web"] .bar');
  await shot(page, 'jobs');
  step('the jobs page lists the job with its task counts');

  // Job: tasks, filtered by state, and found by id.
  await page.goto(url + '/ui/#/job/web');
  await page.waitForSelector('#tasks tr[data-task="live"]');
  // The timeline: the node's lane with both tasks, each bar named; the same as a table.
  const lane = `#timeline .lane[data-node="${nodeId}"]`;
  await page.waitForSelector(`${lane} rect[data-task="fails"]`, { state: 'attached' });
  await page.waitForSelector(`${lane} rect[data-task="live"]`, { state: 'attached' });
  const bar = await page.getAttribute(`${lane} rect[data-task="fails"]`, 'aria-label');
  if (!/^fails: .* to .*failure/.test(bar)) throw new Error('the failed task\'s bar says: ' + bar);
  const rows = await page.$$eval('#timeline-table tbody tr', (rs) => rs.map((r) => r.textContent));
  if (!rows.some((r) => r.startsWith(nodeId + 'live'))) throw new Error('timeline table: ' + rows);
  await page.setViewportSize({ width: 960, height: 640 });
  await shot(page, 'readme-job', true);
  await page.setViewportSize({ width: 1280, height: 800 });
  step('the job page draws the tasks per node on a timeline, also as a table');
  await page.selectOption('#task-state', 'running');
  await page.waitForFunction(() => !document.querySelector('#tasks tr[data-task="fails"]')
    && document.querySelector('#tasks tr[data-task="live"]'));
  await page.selectOption('#task-state', '');
  await page.fill('#task-search', 'fails');
  await page.press('#task-search', 'Enter');
  await page.waitForFunction(() => document.querySelectorAll('#tasks tbody tr').length === 1
    && document.querySelector('#tasks tr[data-task="fails"]'));
  await shot(page, 'job');
  step('the job page filters by state and finds a task by id');

  // Preparation and release per node: prepared here, released when the job ends.
  await page.goto(url + '/ui/#/job/prep');
  await page.waitForSelector(`#prep-release tr[data-node="${nodeId}"]`);
  const prepRow = await page.textContent(`#prep-release tr[data-node="${nodeId}"]`);
  if (!/completed\s*success \(exit 0\)/.test(prepRow) || !prepRow.includes('not run')) {
    throw new Error('preparation/release row: ' + prepRow);
  }
  await shot(page, 'job-prep');
  await page.click('#main button:has-text("Terminate")');
  await page.waitForFunction((n) => {
    const cells = document.querySelectorAll(`#prep-release tr[data-node="${n}"] td`);
    return cells.length === 3 && /completed/.test(cells[2].textContent);
  }, nodeId);
  step('the job page shows preparation and release per node');

  // Paging: 31 tasks, 25 a page.
  await page.goto(url + '/ui/#/job/many');
  await page.waitForFunction(() => document.querySelectorAll('#tasks tbody tr[data-task]').length === 25);
  await page.click('#next-page');
  await page.waitForFunction(() => document.querySelectorAll('#tasks tbody tr[data-task]').length === 6
    && document.querySelector('#page-info').textContent === 'page 2');
  if (!(await page.isDisabled('#next-page'))) throw new Error('a next page after the last');
  await page.click('#prev-page');
  await page.waitForFunction(() => document.querySelectorAll('#tasks tbody tr[data-task]').length === 25
    && document.querySelector('#page-info').textContent === 'page 1');
  step('the job page pages through 31 tasks by odata.nextLink');

  // Why pending tasks wait: on the job page's rows and on the task page.
  const why = await page.textContent('#tasks tr[data-task="t00"]');
  if (!why.includes('waiting: tasks it depends on (dependsOn) have not all succeeded yet')) {
    throw new Error('the pending row says: ' + why);
  }
  await page.goto(url + '/ui/#/task/many/t00');
  await page.waitForSelector('#task-pending[data-code="dependenciesUnmet"]');
  await shot(page, 'task-pending');
  step('a pending task says why it waits, on the job and task pages');

  // 10^4 tasks: the job page's first page, the next, and 1000 rows (printed; a timed test
  // asserts nothing).
  await page.goto(url + '/ui/#/jobs');
  await page.waitForSelector('#jobs tbody tr');
  let t0 = Date.now();
  await page.goto(url + '/ui/#/job/big');
  await page.waitForFunction(() => document.querySelectorAll('#tasks tbody tr[data-task]').length === 25);
  console.log('time: the job page of 10001 tasks (25 a page) shown in ' + (Date.now() - t0) + ' ms');
  t0 = Date.now();
  await page.click('#next-page');
  await page.waitForFunction(() => document.querySelector('#page-info').textContent === 'page 2'
    && document.querySelector('#tasks tbody tr[data-task="b00024"]'));
  console.log('time: its next page shown in ' + (Date.now() - t0) + ' ms');
  t0 = Date.now();
  await page.selectOption('#page-size', '1000');
  await page.waitForFunction(() => document.querySelectorAll('#tasks tbody tr[data-task]').length === 1000);
  console.log('time: 1000 of 10001 tasks shown in ' + (Date.now() - t0) + ' ms');
  const t1 = Date.now();
  await page.goto(url + '/ui/#/jobs');
  await page.waitForFunction(() => /active 10000/.test(document.querySelector('#jobs tr[data-job="big"] .counts')?.textContent || ''));
  console.log('time: the jobs page with 10001 tasks counted in ' + (Date.now() - t1) + ' ms');
  step('a job of 10^4 tasks loads (times above)');

  // The running task's stdout, followed live.
  await page.goto(url + '/ui/#/task/web/live');
  await page.waitForFunction(() => (document.querySelector('#file-stdout-txt') || {}).textContent
    ?.includes('hello'));
  const state = await page.textContent('#task-state');
  if (!state.includes('running')) throw new Error('hello seen, but the task is ' + state);
  await page.waitForSelector('#files a[href*="stdout.txt"]');
  await shot(page, 'task-live');
  step('the task page shows hello live while the task runs');

  // A big output: its tail, with a note of what was left out.
  await page.goto(url + '/ui/#/task/out/long');
  await page.waitForFunction(() => (document.querySelector('#file-stdout-txt') || {}).textContent
    ?.includes('END'));
  const pane = await page.textContent('#file-stdout-txt');
  if (!pane.startsWith('[the first ') || pane.length > 300000) {
    throw new Error('the pane is not the tail: ' + pane.length + ' chars, ' + pane.slice(0, 80));
  }
  await page.goto(url + '/ui/#/task/web/live');
  await page.waitForSelector('#task-actions button');
  step('a big output shows its last 256 KiB');

  // A forged action: the cookie goes, the CSRF header does not.
  const forged = await page.evaluate(async () => {
    const r = await fetch('/jobs/web/tasks/live/terminate?api-version=2024-07-01.20.0', {
      method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}',
    });
    return [r.status, await r.text()];
  });
  if (forged[0] !== 403) throw new Error('a request without the CSRF header got ' + forged);
  const still = await page.textContent('#task-state');
  if (!still.includes('running')) throw new Error('the forged request acted: ' + still);
  step('a request without the CSRF header is refused (403)');

  // Terminate from the page.
  await page.click('#task-actions button:has-text("Terminate")');
  await page.waitForFunction(() => document.querySelector('#task-state')?.textContent.includes('completed'));
  step('terminate from the page completes the running task');

  // The failed task's failureInfo.
  await page.goto(url + '/ui/#/task/web/fails');
  await page.waitForSelector('#failure .failure');
  const failure = await page.textContent('#failure');
  if (!failure.includes('FailureExitCode')) throw new Error('failureInfo not shown: ' + failure);
  await shot(page, 'task-failed');
  step('the failed task shows its failureInfo');

  // Phone width: the task page still fits (no horizontal scroll of the page).
  await page.setViewportSize({ width: 390, height: 844 });
  await page.goto(url + '/ui/#/jobs');
  await page.waitForSelector('#jobs tr[data-job="web"]');
  const wide = await page.evaluate(() => document.documentElement.scrollWidth);
  await shot(page, 'jobs-phone');
  if (wide > 400) throw new Error('the jobs page is ' + wide + ' px wide at phone width');
  await page.goto(url + '/ui/#/job/web');
  await page.waitForSelector(`#timeline .lane[data-node="${nodeId}"] rect[data-task="fails"]`, { state: 'attached' });
  const laneWide = await page.$eval(`#timeline .lane[data-node="${nodeId}"] svg`, (s) => s.getBoundingClientRect().width);
  const jobWide = await page.evaluate(() => document.documentElement.scrollWidth);
  await shot(page, 'job-phone');
  if (jobWide > 400 || laneWide < 200) throw new Error('the job page at phone width: page ' + jobWide + ' px, lane ' + laneWide + ' px');
  step('the jobs and job pages (its timeline too) fit a phone-width screen');
  await ctx.close();

  // A read-only token: pages yes, actions no.
  {
    const { ctx: ro, page: p } = await login(env('BERTH_RO_TOKEN'));
    await p.waitForSelector(`#heatmap a.cell[data-node="${nodeId}"]`);
    await p.goto(url + '/ui/#/jobs');
    await p.waitForSelector('#jobs tr[data-job="web"]');
    await p.click('#jobs tr[data-job="web"] button:has-text("Disable")');
    await p.waitForFunction(() => /refused: 403/.test(document.querySelector('#status').textContent));
    await shot(p, 'read-only-refused');
    const job = await p.evaluate(async () => (await fetch('/jobs/web?api-version=2024-07-01.20.0')).json());
    if (job.state !== 'active') throw new Error('the read-only action acted: job is ' + job.state);
    await ro.close();
    step('a read-only token sees the pages and its action is refused (403)');
  }
  console.log('all ok');
} catch (e) {
  console.log('FAILED: ' + (e && e.stack || e));
  process.exitCode = 1;
} finally {
  await browser.close();
}
