// A host with a hard request timeout, as the official TypeScript SDK client: it starts the server over stdio,
// calls a model tool with `{timeout}` and no resetTimeoutOnProgress (progress does not extend the deadline), then
// calls get_answer (same timeout) until the answer is complete. A request past its timeout throws: exit 1.
//
// Reads its configuration as JSON on stdin (so the server's environment never shows on a command line):
//   {"command": ..., "args": [...], "env": {...}, "cwd": ..., "timeout_ms": 3000,
//    "tool": "ask_openai", "arguments": {...}, "max_requests": 30}
// Prints one JSON object on stdout: each request's name, start offset and duration (ms), the status it returned
// and the progress notifications it received; the final structured result; whether each structured result
// passed the tool's output schema as the SDK checks it.

import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import { performance } from 'node:perf_hooks';

async function readStdin() {
  const chunks = [];
  for await (const chunk of process.stdin) chunks.push(chunk);
  return JSON.parse(Buffer.concat(chunks).toString('utf8'));
}

function round(ms) {
  return Math.round(ms * 10) / 10;
}

// The SDK's own validator for the tool's outputSchema, compiled by listTools(): callTool() applies it to the
// tool's own results; get_answer has no output schema, so its results (in the tool's shape) are checked here.
function checker(client, tool) {
  const validate = client.getToolOutputValidator(tool);
  if (typeof validate !== 'function') {
    throw new Error(`the client has no output schema validator for ${tool}: call listTools() first`);
  }
  return (structured) => {
    const outcome = validate(structured);
    return { valid: outcome.valid, error: outcome.valid ? null : outcome.errorMessage };
  };
}

async function main() {
  const config = await readStdin();
  const transport = new StdioClientTransport({
    command: config.command,
    args: config.args,
    env: config.env,
    cwd: config.cwd,
    stderr: 'inherit',
  });
  const client = new Client({ name: 'detach-ts-client', version: '1.0.0' });
  const requests = [];
  const report = { timeout_ms: config.timeout_ms, requests };
  const origin = performance.now();

  async function timed(name, args) {
    const entry = { name, start_ms: round(performance.now() - origin), duration_ms: null, progress: 0 };
    requests.push(entry);
    const started = performance.now();
    const options = { timeout: config.timeout_ms, resetTimeoutOnProgress: false, onprogress: () => entry.progress++ };
    try {
      const result = await client.callTool({ name, arguments: args }, undefined, options);
      entry.is_error = result.isError === true;
      entry.status = result.structuredContent?.status ?? result._meta?.['mcp-llm-server/answer']?.status ?? null;
      return result;
    } finally {
      entry.duration_ms = round(performance.now() - started);
    }
  }

  try {
    await client.connect(transport);
    const { tools } = await client.listTools();
    const tool = tools.find((t) => t.name === config.tool);
    report.output_schema = tool?.outputSchema !== undefined;
    const check = checker(client, config.tool);

    // callTool() has validated this result against the outputSchema already (it throws when it does not match).
    const first = await timed(config.tool, config.arguments);
    report.first = first.structuredContent;
    report.validations = [{ name: config.tool, status: requests[0].status, ...check(first.structuredContent) }];
    let last = first;
    const answerId = first.structuredContent?.answer_id;
    while (answerId && last.structuredContent?.status === 'running' && requests.length < config.max_requests) {
      last = await timed('get_answer', { answer_id: answerId });
      if (last.isError) break;
      report.validations.push({ name: 'get_answer', status: last.structuredContent?.status, ...check(last.structuredContent) });
    }
    report.final = last.structuredContent ?? null;
    report.final_is_error = last.isError === true;
  } catch (error) {
    report.error = { message: String(error?.message ?? error), code: error?.code ?? null };
    process.exitCode = 1;
  } finally {
    await client.close();
  }
  process.stdout.write(JSON.stringify(report) + '\n');
}

await main();
