// The tab's icon with the unread count on it (the title has it too): the
// favicon's own SVG with a badge drawn over it, as a data: URL (the CSP's
// img-src allows data:). The number is ours, never a peer's text.

const ICON = "favicon.svg";

export class Favicon {
  constructor(link) {
    this.link = link;
    this.svg = "";
    this.count = 0;
    fetch(ICON)
      .then((r) => (r.ok ? r.text() : ""))
      .then((svg) => {
        this.svg = svg;
        this.draw();
      })
      .catch(() => {}); // no badge without it: the plain icon stays
  }

  /** Show `count` unread on the icon (0: the plain icon). */
  show(count) {
    if (count === this.count) return;
    this.count = count;
    this.draw();
  }

  draw() {
    if (!this.count || !this.svg.includes("</svg>")) {
      if (this.link.getAttribute("href") !== ICON) this.link.setAttribute("href", ICON);
      return;
    }
    const badge = this.count > 99 ? "99+" : String(this.count);
    const size = badge.length > 2 ? 15 : badge.length > 1 ? 20 : 26;
    const svg = this.svg.replace(
      "</svg>",
      `<circle cx="44" cy="20" r="20" fill="#e5484d"/><text x="44" y="${20 + size * 0.36}" font-size="${size}" ` +
        `font-family="sans-serif" font-weight="700" text-anchor="middle" fill="#fff">${badge}</text></svg>`,
    );
    this.link.setAttribute("href", `data:image/svg+xml,${encodeURIComponent(svg)}`);
  }
}
