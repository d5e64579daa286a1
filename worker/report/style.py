"""The quality report's stylesheet, inlined into the page (system fonts only: it opens offline)."""

CSS = """
:root{--ink:#1f2328;--muted:#6a737d;--line:#e3e6ea;--bg:#f6f7f9;--card:#fff;--bad:#c62828;--bad-bg:#fdecea;
--warn:#9a6700;--warn-bg:#fff4d6;--good:#1a7f37;--good-bg:#e6f4ea;--accent:#4e79a7}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--ink);
font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
main{max-width:1240px;margin:0 auto;padding:24px 28px 40px}
header h1{margin:0;font-size:26px;letter-spacing:-.01em}
.sub{margin:4px 0 18px;color:var(--muted)}
h2{font-size:20px;margin:0 0 6px;display:flex;align-items:center;gap:10px;flex-wrap:wrap}
h3{font-size:15px;margin:22px 0 6px}
h3 small{font-weight:400;color:var(--muted);margin-left:6px}
.ver{color:var(--accent)}
.model{font-size:13px;font-weight:400;color:var(--muted);font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
.desc{color:var(--muted);margin:0 0 4px;max-width:900px}
.scoreline{margin:0 0 6px}.scoreline .agreement.bad{color:#b42318}.scoreline .agreement.good{color:#067647}
.note{background:var(--warn-bg);padding:8px 12px;border-radius:6px}
.muted{color:var(--muted)}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(118px,1fr));gap:10px;margin-bottom:14px}
.card{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:10px 12px}
.card .num{font-size:22px;font-weight:600;font-variant-numeric:tabular-nums}
.card .lbl{color:var(--muted);font-size:12px}
.card.bad{border-color:#f3b7b2;background:var(--bad-bg)}.card.bad .num{color:var(--bad)}
.card.good .num{color:var(--good)}
.card.warn{background:var(--warn-bg)}.card.warn .num{color:var(--warn)}
nav ul{list-style:none;display:flex;flex-wrap:wrap;gap:8px 18px;padding:0;margin:0 0 18px}
nav a{color:var(--accent);font-weight:600;text-decoration:none}
section.rubric{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:18px 22px 22px;
margin-bottom:22px}
.empty-state{background:var(--card);border:1px dashed #c9cfd6;border-radius:10px;padding:36px;text-align:center}
.empty-state p{max-width:640px;margin:8px auto 0;color:var(--muted)}
.legend{display:flex;flex-wrap:wrap;gap:4px 16px;margin:2px 0 4px;font-size:13px}
.key{white-space:nowrap}
.key i{display:inline-block;width:18px;height:4px;border-radius:2px;vertical-align:middle;margin-right:6px}
.key i.dash{background:repeating-linear-gradient(90deg,#3b3b3b 0 6px,transparent 6px 9px)!important}
svg.chart{width:100%;height:auto;display:block}
svg .grid{stroke:#eceef1;stroke-width:1}
svg .ax{fill:#6a737d;font-size:11px;font-family:system-ui,sans-serif}
svg .band-prev{fill:#f3f5f8}
svg .band-curr{fill:#eaf1fa}
svg .band-label{fill:#8a94a0;font-size:11px;font-family:system-ui,sans-serif}
.two{display:grid;grid-template-columns:1fr 1fr;gap:28px}
table{border-collapse:collapse;width:100%;font-variant-numeric:tabular-nums;font-size:13px}
th{text-align:left;font-weight:600;color:var(--muted);border-bottom:2px solid var(--line);padding:6px 8px}
td{border-bottom:1px solid var(--line);padding:5px 8px;vertical-align:top}
tbody tr:nth-child(even){background:#fafbfc}
tr.alert td{background:var(--bad-bg)}
tr.explained td{background:var(--warn-bg)}
.r{text-align:right;white-space:nowrap}
td.bad{color:var(--bad);font-weight:600}
td.good{color:var(--good)}
.n{color:var(--muted);font-size:12px}
.k{color:var(--muted)}
.badge{display:inline-block;border-radius:10px;padding:1px 8px;font-size:12px;font-weight:600;line-height:18px}
.badge.alert{background:var(--bad);color:#fff}
.badge.warn{background:#f5d67b;color:#5c4400}
.badge.ok{background:var(--good-bg);color:var(--good)}
.badge.muted{background:#eceef1;color:var(--muted)}
td.tid{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12px;max-width:420px;
overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
td.tid a{color:var(--accent)}
details{margin-top:8px}
summary{cursor:pointer;color:var(--accent);font-weight:600;padding:6px 0}
footer{color:var(--muted);font-size:12px;margin-top:10px}
code{background:#eef0f3;padding:1px 5px;border-radius:4px}
@media (max-width:900px){.two{grid-template-columns:1fr}}
"""
