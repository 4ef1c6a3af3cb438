// ComfyUI-Flipbook: saved UI workflows keep working after a node's interface changes.
// The frontend twin of nodes/migrations.py: before a workflow is configured, sockets of renamed
// widgets get their new names, and links from an output whose type changed into inputs of another
// type are dropped (they never ran). The table comes from the pack's /flipbook/migrations route.
// Widget values are stored by position, and a rename keeps the position, so values need no change.

export function migrateGraph(graph, table) {
  if (!graph || !Array.isArray(graph.nodes) || !table) return graph;
  const byId = new Map(graph.nodes.map((n) => [n.id, n]));
  const dead = new Set();
  for (const node of graph.nodes) {
    const m = table[node.type];
    if (!m) continue;
    for (const input of node.inputs || []) {
      const to = m.rename?.[input.name];
      if (to === undefined) continue;
      input.name = to;
      if (input.widget && typeof input.widget === "object") input.widget.name = to;
    }
    for (const [slot, type] of Object.entries(m.outputs || {})) {
      const out = (node.outputs || [])[Number(slot)];
      if (!out) continue;
      out.type = type;
      for (const id of out.links || []) {
        const link = (graph.links || []).find((l) => (Array.isArray(l) ? l[0] : l.id) === id);
        if (!link) continue;
        const [target, targetSlot] = Array.isArray(link) ? [link[3], link[4]] : [link.target_id, link.target_slot];
        const input = byId.get(target)?.inputs?.[targetSlot];
        if (input && input.type !== type && input.type !== "*") {
          dead.add(id);
          input.link = null;
        } else if (Array.isArray(link)) link[5] = type;
        else link.type = type;
      }
      out.links = (out.links || []).filter((id) => !dead.has(id));
    }
  }
  if (dead.size) graph.links = (graph.links || []).filter((l) => !dead.has(Array.isArray(l) ? l[0] : l.id));
  return graph;
}

const comfy = globalThis.window?.comfyAPI;
const app = comfy?.app?.app;
if (app) {
  let table = null;
  const load = async () => {
    try {
      const res = await comfy.api.api.fetchApi("/flipbook/migrations");
      table = res.ok ? await res.json() : {};
    } catch (err) {
      console.warn("ComfyUI-Flipbook: no migration table", err);
      table = {};
    }
    return table;
  };
  app.registerExtension({
    name: "ComfyUI-Flipbook.Migrations",
    async init() { await load(); },
    async beforeConfigureGraph(graph) { migrateGraph(graph, table ?? (await load())); },
  });
}
