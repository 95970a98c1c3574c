// Turns @grafana/schema's TypeScript dashboard model into JSON Schema files:
// the dashboard itself and, per panel plugin, its Options and FieldConfig
// (the `options` and `fieldConfig.defaults.custom` of a panel).
// Usage: node make-schemas.mjs OUT_DIR   (run where package.json's deps are installed)
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { createGenerator } from "ts-json-schema-generator";

const out = process.argv[2];
if (!out) {
  console.error("usage: node make-schemas.mjs OUT_DIR");
  process.exit(2);
}
const raw = "@grafana/schema/dist/esm/raw";
const panels = {
  timeseries: "timeseries/panelcfg/x/TimeSeriesPanelCfg_types.gen",
  stat: "stat/panelcfg/x/StatPanelCfg_types.gen",
  table: "table/panelcfg/x/TablePanelCfg_types.gen",
  barchart: "barchart/panelcfg/x/BarChartPanelCfg_types.gen",
  bargauge: "bargauge/panelcfg/x/BarGaugePanelCfg_types.gen",
};
// One entry file naming every type uniquely (each plugin calls its types
// `Options` and `FieldConfig`), so a single TypeScript program serves all
// schemas: one process, a few seconds.
const lines = [`export type { Dashboard } from "${raw}/dashboard/x/dashboard_types.gen";`];
for (const [name, path] of Object.entries(panels)) {
  lines.push(`import type * as ${name} from "${raw}/composable/${path}";`);
  lines.push(`export interface ${name}_Options extends ${name}.Options {}`);
  if (name !== "stat" && name !== "bargauge") {
    lines.push(`export interface ${name}_FieldConfig extends ${name}.FieldConfig {}`);
  }
}
mkdirSync(out, { recursive: true });
const entry = join(process.cwd(), "schema-entry.ts");
writeFileSync(entry, lines.join("\n") + "\n");

const generator = createGenerator({ path: entry, skipTypeCheck: true, expose: "export", topRef: true, additionalProperties: false });
const types = ["Dashboard"];
for (const name of Object.keys(panels)) {
  types.push(`${name}_Options`);
  if (name !== "stat" && name !== "bargauge") types.push(`${name}_FieldConfig`);
}
for (const type of types) {
  const schema = generator.createSchema(type);
  writeFileSync(join(out, `${type}.schema.json`), JSON.stringify(schema, null, 1));
}
console.log(`wrote ${types.length} schemas to ${out}`);
