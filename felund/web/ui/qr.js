// Draw a QR code on a <canvas> with the vendored qrcode-generator (drawing
// with the canvas API: no HTML strings, no inline styles, CSP-clean).

import qrcode from "../vendor/qrcode.mjs";

const QUIET_ZONE = 4; // modules of white border the QR spec asks for
const TARGET_PX = 288;

/**
 * Draw `text` as a QR code; returns the module count (for tests and labels).
 * @param {HTMLCanvasElement} canvas
 * @param {string} text
 */
export function drawQr(canvas, text) {
  // Type 0 = the smallest version that fits; M = 15% error correction, a
  // fair trade for a code scanned off a screen.
  const qr = qrcode(0, "M");
  qr.addData(text, "Byte");
  qr.make();
  const n = qr.getModuleCount();
  const scale = Math.max(2, Math.floor(TARGET_PX / (n + 2 * QUIET_ZONE)));
  const size = (n + 2 * QUIET_ZONE) * scale;
  canvas.width = size;
  canvas.height = size;
  const ctx = canvas.getContext("2d");
  ctx.fillStyle = "#ffffff";
  ctx.fillRect(0, 0, size, size);
  ctx.fillStyle = "#000000";
  for (let r = 0; r < n; r += 1) {
    for (let c = 0; c < n; c += 1) {
      if (qr.isDark(r, c)) {
        ctx.fillRect((c + QUIET_ZONE) * scale, (r + QUIET_ZONE) * scale, scale, scale);
      }
    }
  }
  canvas.dataset.modules = String(n);
  return n;
}
