// A layered (Sugiyama-style) layout of a flowchart, in linear time plus a few ordering sweeps,
// so a 1,000-node run draws at once:
// 1. solid connectors that close a cycle (back edges of a depth-first search from the start
//    nodes) are set aside, so loops do not stretch the layers;
// 2. each node's layer is its longest solid path from a start (topological order);
// 3. nodes within a layer are ordered by the mean position of their neighbours (barycenter),
//    sweeping down and up a few times to reduce crossings.
// Dotted connectors pass context only and never shape the layout.

export const NODE_W = 168;
export const NODE_H = 52;
const GAP_X = 36;
const GAP_Y = 64;
const MARGIN = 24;

export function layout(definition) {
  const nodes = (definition.nodes || []).map((n) => n.id);
  const index = new Map(nodes.map((id, i) => [id, i]));
  const connectors = (definition.connectors || []).filter((c) => index.has(c.from) && index.has(c.to));
  const out = nodes.map(() => []);
  for (const c of connectors) if ((c.mode || 'solid') === 'solid') out[index.get(c.from)].push(c);

  // 1. Back edges, by an iterative DFS (a 1,000-node chain must not overflow the stack).
  const back = new Set();
  const mark = new Uint8Array(nodes.length); // 0 new, 1 on stack, 2 done
  const roots = [
    ...(definition.nodes || []).filter((n) => n.type === 'start').map((n) => index.get(n.id)),
    ...nodes.map((_, i) => i),
  ];
  for (const root of roots) {
    if (mark[root]) continue;
    const stack = [[root, 0]];
    mark[root] = 1;
    while (stack.length) {
      const top = stack[stack.length - 1];
      const [v, i] = top;
      if (i < out[v].length) {
        top[1]++;
        const c = out[v][i];
        const w = index.get(c.to);
        if (mark[w] === 1) back.add(c.id);
        else if (mark[w] === 0) { mark[w] = 1; stack.push([w, 0]); }
      } else {
        mark[v] = 2;
        stack.pop();
      }
    }
  }

  // 2. Longest-path layers over the forward solid edges.
  const forward = connectors.filter((c) => (c.mode || 'solid') === 'solid' && !back.has(c.id) && c.from !== c.to);
  const indeg = new Int32Array(nodes.length);
  const succ = nodes.map(() => []);
  const pred = nodes.map(() => []);
  for (const c of forward) {
    const a = index.get(c.from);
    const b = index.get(c.to);
    succ[a].push(b);
    pred[b].push(a);
    indeg[b]++;
  }
  const layer = new Int32Array(nodes.length);
  const queue = [];
  for (let i = 0; i < nodes.length; i++) if (indeg[i] === 0) queue.push(i);
  for (let q = 0; q < queue.length; q++) {
    const v = queue[q];
    for (const w of succ[v]) {
      layer[w] = Math.max(layer[w], layer[v] + 1);
      if (--indeg[w] === 0) queue.push(w);
    }
  }
  const layers = [];
  for (let i = 0; i < nodes.length; i++) (layers[layer[i]] ||= []).push(i);
  for (let l = 0; l < layers.length; l++) layers[l] ||= [];

  // 3. Barycenter ordering.
  const pos = new Float64Array(nodes.length);
  const place = () => layers.forEach((ids) => ids.forEach((v, i) => { pos[v] = i; }));
  place();
  const sweep = (ids, neighbours) => {
    const key = new Map();
    for (const v of ids) {
      const ns = neighbours[v];
      key.set(v, ns.length ? ns.reduce((sum, w) => sum + pos[w], 0) / ns.length : pos[v]);
    }
    ids.sort((a, b) => key.get(a) - key.get(b));
    ids.forEach((v, i) => { pos[v] = i; });
  };
  for (let round = 0; round < 4; round++) {
    for (let l = 1; l < layers.length; l++) sweep(layers[l], pred);
    for (let l = layers.length - 2; l >= 0; l--) sweep(layers[l], succ);
  }

  const widest = Math.max(1, ...layers.map((ids) => ids.length));
  const width = widest * (NODE_W + GAP_X) - GAP_X + 2 * MARGIN + 80;
  const height = layers.length * (NODE_H + GAP_Y) - GAP_Y + 2 * MARGIN;
  const boxes = new Map();
  layers.forEach((ids, l) => {
    const rowWidth = ids.length * (NODE_W + GAP_X) - GAP_X;
    const x0 = MARGIN + (width - 80 - 2 * MARGIN - rowWidth) / 2;
    ids.forEach((v, i) => {
      boxes.set(nodes[v], { x: x0 + i * (NODE_W + GAP_X), y: MARGIN + l * (NODE_H + GAP_Y), layer: l });
    });
  });
  return { boxes, back, width, height, connectors };
}
