// The real-parser check of tools/mermaid-check/run: parses each file with Mermaid (in a
// jsdom window, as Mermaid needs a DOM) and fails if a message or note has no text, if an
// arrow names a lane that was not declared, or if Mermaid read fewer statements than the
// file has lines for.
import { JSDOM } from 'jsdom';
const dom = new JSDOM('<!doctype html><html><body></body></html>');
globalThis.window = dom.window;
globalThis.document = dom.window.document;
const mermaid = (await import('mermaid')).default;
const fs = await import('node:fs');
let bad = 0;
for (const file of process.argv.slice(2)) {
  const text = fs.readFileSync(file, 'utf8');
  try {
    await mermaid.parse(text);
    const d = await mermaid.mermaidAPI.getDiagramFromText(text);
    const actors = [...d.db.getActors().keys()];
    const declared = text.split('\n').filter(l => l.trim().startsWith('participant')).map(l => l.trim().split(/\s+/)[1]);
    const msgs = d.db.getMessages();
    const empty = msgs.filter(m => (m.type === 0 || m.type === 1 || m.type === 3 || m.type === 4 || m.type === 2) && !String(m.message).trim());
    const undeclared = actors.filter(a => !declared.includes(a));
    const lines = text.split('\n').filter(l => /->>|-->>|--x|Note over/.test(l)).length;
    console.log(`${file}: ${msgs.length} statements (${lines} lines), ${actors.length} lanes, ${empty.length} empty, undeclared ${JSON.stringify(undeclared)}`);
    if (empty.length || undeclared.length || msgs.length !== lines) bad++;
  } catch (e) { console.log(`${file}: PARSE ERROR ${e.message}`); bad++; }
}
process.exit(bad ? 1 : 0);
