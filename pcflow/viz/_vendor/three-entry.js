// The parts of three.js that pcflow's viewer uses, exposed as the global `THREE`.
// Bundled and minified into three.min.js by esbuild; see README.md in this folder.
export {
  BufferAttribute,
  BufferGeometry,
  Color,
  LinearSRGBColorSpace,
  PerspectiveCamera,
  Points,
  PointsMaterial,
  Scene,
  Vector3,
  WebGLRenderer,
} from "three";
export { OrbitControls } from "three/examples/jsm/controls/OrbitControls.js";
