// ComfyUI-Flipbook frontend extension: shows the animation metrics in the Metrics node after a run.
import { app } from "../../scripts/app.js";
import { ComfyWidgets } from "../../scripts/widgets.js";

app.registerExtension({
  name: "ComfyUI-Flipbook.ShowMetrics",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData.name !== "FlipbookAnimationMetrics") return;
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      onExecuted?.apply(this, arguments);
      const text = (message?.text || []).join("\n");
      let widget = this.widgets?.find((w) => w.name === "metrics");
      if (!widget) {
        widget = ComfyWidgets["STRING"](this, "metrics", ["STRING", { multiline: true }], app).widget;
        widget.inputEl.readOnly = true;
        widget.serialize = false; // a display, not a setting: keep it out of the saved workflow
        widget.options = { ...(widget.options || {}), serialize: false }; // and out of the prompt sent to run
      }
      widget.value = text;
      this.setSize([Math.max(this.size[0], 300), Math.max(this.size[1], this.computeSize()[1])]);
      app.graph.setDirtyCanvas(true, false);
    };
  },
});
