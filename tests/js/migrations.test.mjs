// node --test tests/js: the frontend migration twin does what nodes/migrations.py does to UI workflows.
import assert from "node:assert/strict";
import { test } from "node:test";
import { migrateGraph } from "../../web/js/migrations.js";

const table = {
  FlipbookAnimateXSampler: { rename: { cfg: "guidance" }, outputs: {} },
  FlipbookDDIMInvert: { rename: {}, outputs: { 1: "FLIPBOOK_INVERSION" } },
};

test("sockets of renamed widgets get the new name, values stay in place", () => {
  const g = { nodes: [{ id: 1, type: "FlipbookAnimateXSampler", widgets_values: [13, "fixed", 30, 2.5],
    inputs: [{ name: "cfg", type: "FLOAT", widget: { name: "cfg" }, link: null }] }], links: [] };
  migrateGraph(g, table);
  assert.equal(g.nodes[0].inputs[0].name, "guidance");
  assert.equal(g.nodes[0].inputs[0].widget.name, "guidance");
  assert.deepEqual(g.nodes[0].widgets_values, [13, "fixed", 30, 2.5]);
});

test("links of a retyped output into inputs of another type are dropped", () => {
  const g = {
    nodes: [
      { id: 1, type: "FlipbookDDIMInvert", outputs: [{ type: "LATENT", links: [] }, { type: "FLIPBOOK_TRAJECTORY", links: [7, 8] }] },
      { id: 2, type: "FlipbookMeshDeform", inputs: [{ name: "trajectory", type: "FLIPBOOK_TRAJECTORY", link: 7 }] },
      { id: 3, type: "Reroute", inputs: [{ name: "", type: "*", link: 8 }] },
    ],
    links: [[7, 1, 1, 2, 0, "FLIPBOOK_TRAJECTORY"], [8, 1, 1, 3, 0, "FLIPBOOK_TRAJECTORY"]],
  };
  migrateGraph(g, table);
  assert.equal(g.nodes[0].outputs[1].type, "FLIPBOOK_INVERSION");
  assert.deepEqual(g.nodes[0].outputs[1].links, [8]);
  assert.equal(g.nodes[1].inputs[0].link, null);
  assert.deepEqual(g.links, [[8, 1, 1, 3, 0, "FLIPBOOK_INVERSION"]]);
});

test("graphs without our nodes, or no table, pass through", () => {
  const g = { nodes: [{ id: 1, type: "KSampler", inputs: [{ name: "cfg" }] }], links: [] };
  assert.deepEqual(migrateGraph(structuredClone(g), table), g);
  assert.equal(migrateGraph(null, table), null);
  assert.deepEqual(migrateGraph(structuredClone(g), null), g);
});
