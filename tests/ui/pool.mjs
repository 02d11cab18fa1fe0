// The web view of `berth service` in headless Chromium: three nodes on the heatmap, a
// task's output read through the service, preparation runs per node, a node's image pulls,
// a read-only token's node action refused.
// Started by tests/tests/ui.rs with the pool `webpool` of three agents and the job `pj`
// whose task `hi` printed hello (and `pulled` ran), and the job `pp` whose preparation task ran on the nodes
// BERTH_PREP_NODES, and the task `pulled` whose image BERTH_PULLED the node BERTH_PULL_NODE
// pulled from a registry. Environment: BERTH_URL, BERTH_TOKEN, BERTH_RO_TOKEN,
// BERTH_UI_SHOTS, BERTH_UI_TOOLS, BERTH_NODE_IDS and BERTH_PREP_NODES (comma-separated),
// BERTH_PULLED, BERTH_PULL_NODE.
import { env, launch, login, shot, step } from './lib.mjs';

const url = env('BERTH_URL');
const nodes = env('BERTH_NODE_IDS').split(',');
const prepNodes = env('BERTH_PREP_NODES').split(',');
const browser = await launch();
try {
  const { ctx, page } = await login(browser, url, env('BERTH_TOKEN'));
  for (const id of nodes) await page.waitForSelector(`#heatmap a.cell[data-node="${id}"]`);
  await page.waitForFunction(() => /idle\s*3/.test(document.querySelector('#node-counts').textContent));
  const who = await page.textContent('#who');
  if (!who.includes('service')) throw new Error('not the service view: ' + who);
  await shot(page, 'service-pool');
  step('the service view shows the three nodes, 3 idle');

  await page.goto(url + '/ui/#/jobs');
  await page.waitForSelector('#jobs tr[data-job="pj"] .bar');
  const counts = await page.textContent('#jobs tr[data-job="pj"] .counts');
  if (!counts.includes('succeeded 2')) throw new Error('task counts: ' + counts);
  step('the jobs page shows the service task counts');

  await page.goto(url + '/ui/#/task/pj/hi');
  await page.waitForFunction(() => (document.querySelector('#file-stdout-txt') || {}).textContent
    ?.includes('hello'));
  await shot(page, 'service-task');
  step('the task page reads stdout through the service');

  await page.goto(url + '/ui/#/job/pw');
  await page.waitForFunction(() => (document.querySelector('#tasks tr[data-task="w"]') || {}).textContent
    ?.includes('waiting: tasks it depends on (dependsOn) have not all succeeded yet'));
  await page.goto(url + '/ui/#/task/pw/w');
  await page.waitForSelector('#task-pending[data-code="dependenciesUnmet"]');
  step('a pending task says why it waits, through the service');

  // Preparation and release per node, each node's entry read from its agent.
  await page.goto(url + '/ui/#/job/pp');
  for (const id of prepNodes) {
    await page.waitForSelector(`#prep-release tr[data-node="${id}"]`);
    const row = await page.textContent(`#prep-release tr[data-node="${id}"]`);
    if (!/completed\s*success \(exit 0\)/.test(row)) throw new Error('preparation row: ' + row);
  }
  const rows = await page.$$eval('#prep-release tbody tr', (r) => r.length);
  if (rows !== prepNodes.length) throw new Error(`${rows} preparation rows, not ${prepNodes.length}`);
  await shot(page, 'service-job-prep');
  step('the job page shows preparation and release per node, through the service');

  // The node that pulled the registry's image shows the pull, from its heartbeats.
  const pulled = env('BERTH_PULLED') + ':latest';
  await page.goto(url + `/ui/#/node/webpool/${env('BERTH_PULL_NODE')}`);
  await page.waitForSelector(`#pulls li[data-image="${pulled}"][data-state="pulled"]`);
  const pull = await page.textContent(`#pulls li[data-image="${pulled}"]`);
  if (!/layers (\d+)\/\1/.test(pull)) throw new Error('pull: ' + pull);
  const ran = await page.textContent('#recent-tasks li[data-task="pj/pulled"][data-state="completed"]');
  if (!ran.includes('success, exit 0')) throw new Error('the completed task shows: ' + ran);
  await shot(page, 'service-node-pulls');
  step('the node page shows its image pulls and the task it ran, through the service');

  await page.goto(url + `/ui/#/node/webpool/${nodes[0]}`);
  await page.waitForSelector('#node-state');
  await page.waitForSelector('#node-actions button');
  await shot(page, 'service-node');
  await ctx.close();
  step('the node page offers its actions');

  const { ctx: ro, page: p } = await login(browser, url, env('BERTH_RO_TOKEN'));
  await p.goto(url + `/ui/#/node/webpool/${nodes[0]}`);
  await p.waitForSelector('#node-actions button');
  await p.click('#node-actions button:has-text("Disable scheduling")');
  await p.waitForFunction(() => /refused: 403/.test(document.querySelector('#status').textContent));
  const n = await p.evaluate(async (id) =>
    (await fetch(`/pools/webpool/nodes/${id}?api-version=2024-07-01.20.0`)).json(), nodes[0]);
  if (n.schedulingState !== 'enabled') throw new Error('the read-only action acted: ' + JSON.stringify(n));
  await ro.close();
  step('a read-only token is refused a node action');
  console.log('all ok');
} catch (e) {
  console.log('FAILED: ' + (e && e.stack || e));
  process.exitCode = 1;
} finally {
  await browser.close();
}
