"""The inline style and script of ``report.html`` (see ``_report.py``).

The script only ever puts job data on the page through ``textContent``, ``href``/``src`` of
elements it creates, and ``title``: never ``innerHTML``. Remote inputs are never loaded (the
page makes no connection); they show as a link the reviewer may follow.
"""

from __future__ import annotations

__all__ = ["PAGE_CSS", "PAGE_SCRIPT"]

PAGE_CSS = """
:root{--bg:#f4f5f7;--card:#fff;--ink:#1d2330;--mute:#667085;--line:#e2e5ea;
--ok:#1f9d55;--bad:#d64545;--unsure:#d98e04;--queued:#8a94a6;--run:#2f6fd6}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;
background:var(--bg);color:var(--ink)}
header,section{max-width:1500px;margin:0 auto;padding:0 20px}
header{padding-top:18px}h1{font-size:20px;margin:0}h2{font-size:16px;margin:22px 0 10px}
.sub{color:var(--mute);margin:2px 0 12px}
.summary{display:flex;flex-wrap:wrap;gap:16px;align-items:stretch}
.tiles{display:flex;gap:10px;flex-wrap:wrap}
.tile{background:var(--card);border:1px solid var(--line);border-top:4px solid var(--queued);
border-radius:8px;padding:10px 16px;min-width:110px}
.tile strong{display:block;font-size:26px;line-height:1.1}.tile span{color:var(--mute)}
.tile.zero{opacity:.55}
.tile.succeeded{border-top-color:var(--ok)}.tile.failed{border-top-color:var(--bad)}
.tile.uncertain{border-top-color:var(--unsure)}.tile.running{border-top-color:var(--run)}
.facts{display:grid;grid-template-columns:repeat(4,minmax(120px,auto));gap:6px 22px;margin:0;
background:var(--card);border:1px solid var(--line);border-radius:8px;padding:10px 16px}
.facts dt{color:var(--mute);font-size:12px}.facts dd{margin:0;font-weight:600;
overflow-wrap:anywhere}
.failures details{background:var(--card);border:1px solid var(--line);border-left:4px solid
var(--bad);border-radius:6px;margin:6px 0;padding:6px 12px}
.failures summary{cursor:pointer}.etype{font-weight:600}.none{color:var(--mute)}
.failures ul{margin:6px 0;padding-left:18px}.failures li{margin:4px 0}
.msg{overflow-wrap:anywhere;white-space:pre-wrap}.ids{color:var(--mute);font-size:12px;
overflow-wrap:anywhere}.count{color:var(--mute)}
button,select,input{font:inherit}
.show-type{margin-left:8px;font-size:12px;border:1px solid var(--line);background:#fff;
border-radius:4px;cursor:pointer}
.controls{display:flex;flex-wrap:wrap;gap:10px;align-items:center;margin-bottom:8px}
.filters button{border:1px solid var(--line);background:var(--card);padding:5px 12px;
border-radius:16px;cursor:pointer;margin-right:4px}
.filters button[aria-pressed=true]{background:var(--ink);color:#fff;border-color:var(--ink)}
#search{padding:6px 10px;border:1px solid var(--line);border-radius:6px;min-width:260px}
.error-filter{background:#fde8e8;border-radius:12px;padding:3px 10px;cursor:pointer}
.pager{display:flex;gap:8px;align-items:center;margin:8px 0;color:var(--mute)}
.pager button{border:1px solid var(--line);background:var(--card);border-radius:4px;
padding:3px 10px;cursor:pointer}.pager button:disabled{opacity:.4;cursor:default}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(360px,1fr));gap:12px}
.card{background:var(--card);border:1px solid var(--line);border-left:5px solid var(--queued);
border-radius:8px;padding:10px 12px;display:flex;flex-direction:column;gap:6px;min-width:0}
.card.succeeded{border-left-color:var(--ok)}.card.failed{border-left-color:var(--bad)}
.card.uncertain{border-left-color:var(--unsure)}.card.running{border-left-color:var(--run)}
.head{display:flex;gap:8px;align-items:center;min-width:0}
.badge{font-size:11px;text-transform:uppercase;letter-spacing:.04em;padding:1px 7px;
border-radius:9px;color:#fff;background:var(--queued);flex:none}
.badge.succeeded{background:var(--ok)}.badge.failed{background:var(--bad)}
.badge.uncertain{background:var(--unsure)}.badge.running{background:var(--run)}
.jid{font-weight:600;overflow:hidden;text-overflow:ellipsis;white-space:nowrap;flex:1}
.line{color:var(--mute);font-size:12px;flex:none}
.pics{display:grid;grid-template-columns:auto auto 1fr;align-items:center;gap:6px;
min-height:96px}
.ins,.outs{display:flex;flex-wrap:wrap;gap:6px;align-items:center}.ins{max-width:138px}
.arrow{color:var(--mute);font-size:20px;padding:0 2px}
.thumb{display:inline-flex;align-items:center;justify-content:center;border-radius:4px;
background:#e9ecf1;border:1px solid var(--line);overflow:hidden;color:var(--mute);
font-size:11px;text-decoration:none}
.thumb.in{width:64px;height:64px}.thumb.out{width:116px;height:116px}
.thumb img{width:100%;height:100%;object-fit:contain;display:block}
.thumb.ph{padding:4px;text-align:center;overflow-wrap:anywhere}
.noout{color:var(--mute);font-size:12px;font-style:italic}
.prompt{display:-webkit-box;-webkit-line-clamp:3;-webkit-box-orient:vertical;overflow:hidden;
overflow-wrap:anywhere;white-space:pre-wrap}
.meta{color:var(--mute);font-size:12px}
.err{color:var(--bad);font-size:12px;overflow-wrap:anywhere;display:-webkit-box;
-webkit-line-clamp:3;-webkit-box-orient:vertical;overflow:hidden}
.empty{color:var(--mute);padding:20px}
#viewer{position:fixed;inset:0;background:rgba(12,16,24,.86);z-index:10;overflow:auto}
#viewer[hidden]{display:none}
.vbox{max-width:1500px;margin:2vh auto;background:var(--card);border-radius:10px;
padding:14px 18px;display:flex;flex-direction:column;gap:10px}
.vhead{display:flex;gap:10px;align-items:center}.vhead .jid{font-size:16px}
.vhead button{border:1px solid var(--line);background:#fff;border-radius:4px;
padding:3px 10px;cursor:pointer}
.vpics{display:flex;gap:14px;align-items:center}
.vins,.vouts{display:flex;gap:10px;flex-wrap:wrap;align-items:flex-start}
.vins{flex:0 1 30%}.vouts{flex:1 1 70%}
.vpics figure{margin:0;display:flex;flex-direction:column;gap:3px;min-width:0}
.vpics figcaption{color:var(--mute);font-size:12px}
.vins img{max-width:100%;max-height:28vh;object-fit:contain;background:#e9ecf1}
.vouts img{max-width:100%;max-height:70vh;object-fit:contain;background:#e9ecf1}
.vouts figure{flex:1 1 300px}.vins figure{flex:1 1 120px}
.vprompt{white-space:pre-wrap;overflow-wrap:anywhere}
.hint{color:var(--mute);font-size:12px}
"""

PAGE_SCRIPT = r"""
(function () {
  'use strict';
  var jobs = JSON.parse(document.getElementById('report-data').textContent);
  var STATES = ['all', 'succeeded', 'failed', 'uncertain', 'queued', 'running'];
  var SIZES = [30, 60, 120, 240];
  var st = {status: 'all', query: '', errorType: null, page: 0, size: 60};
  var view = jobs;
  var grid = document.getElementById('grid');
  var filters = document.querySelector('.filters');
  var chip = document.querySelector('.error-filter');
  var search = document.getElementById('search');

  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) { node.className = cls; }
    if (text !== undefined && text !== null) { node.textContent = String(text); }
    return node;
  }

  function count(status) {
    if (status === 'all') { return jobs.length; }
    var total = 0;
    for (var i = 0; i < jobs.length; i++) { if (jobs[i][1] === status) { total++; } }
    return total;
  }

  STATES.forEach(function (status) {
    var total = count(status);
    if (status !== 'all' && total === 0) { return; }
    var button = el('button', null, status + ' (' + total + ')');
    button.type = 'button';
    button.dataset.status = status;
    button.setAttribute('aria-pressed', String(status === st.status));
    button.addEventListener('click', function () { setStatus(status); });
    filters.appendChild(button);
  });

  function setStatus(status) {
    st.status = status;
    var buttons = filters.querySelectorAll('button');
    for (var i = 0; i < buttons.length; i++) {
      buttons[i].setAttribute('aria-pressed', String(buttons[i].dataset.status === status));
    }
    apply();
  }

  function setErrorType(type) {
    st.errorType = type;
    if (type !== null) { search.value = ''; st.query = ''; }
    chip.hidden = type === null;
    chip.textContent = type === null ? '' : 'error type: ' + type + '  \u2715';
    if (type !== null) { setStatus('all'); } else { apply(); }
  }
  chip.addEventListener('click', function () { setErrorType(null); });
  var showButtons = document.querySelectorAll('.show-type');
  for (var b = 0; b < showButtons.length; b++) {
    showButtons[b].addEventListener('click', function (event) {
      event.preventDefault();
      setErrorType(this.getAttribute('data-error-type'));
      grid.scrollIntoView({block: 'start'});
    });
  }

  var timer = null;
  search.addEventListener('input', function () {
    var value = this.value;
    clearTimeout(timer);
    timer = setTimeout(function () { st.query = value.toLowerCase(); apply(); }, 120);
  });

  function matches(job) {
    if (st.status !== 'all' && job[1] !== st.status) { return false; }
    if (st.errorType !== null && (job[7] || 'Unknown') !== st.errorType) { return false; }
    if (!st.query) { return true; }
    var text = (String(job[0]) + '\n' + job[2] + '\n' + job[7] + ' ' + job[8]).toLowerCase();
    return text.indexOf(st.query) >= 0;
  }

  function apply() {
    var all = st.status === 'all' && st.errorType === null && !st.query;
    view = all ? jobs : jobs.filter(matches);
    st.page = 0;
    render();
  }

  function thumb(pair, side, label) {
    var kind = pair[0], target = pair[1], node;
    if (kind === 'img') {
      node = el('a', 'thumb ' + side);
      node.href = target;
      node.target = '_blank';
      node.rel = 'noopener';
      node.title = label;
      var img = el('img');
      img.loading = 'lazy';
      img.decoding = 'async';
      img.alt = label;
      img.addEventListener('error', function () {
        node.classList.add('ph');
        node.textContent = 'missing';
      });
      img.src = target;
      node.appendChild(img);
      return node;
    }
    if (kind === 'url' && /^https?:\/\//i.test(target)) {
      node = el('a', 'thumb ph ' + side, 'remote image');
      node.href = target;
      node.target = '_blank';
      node.rel = 'noopener noreferrer';
      node.title = target;
      return node;
    }
    node = el('span', 'thumb ph ' + side, kind === 'url' ? 'remote image' : 'inline image');
    if (target) { node.title = target; }
    return node;
  }

  function card(job, index) {
    var node = el('article', 'card ' + job[1]);
    node.dataset.status = job[1];
    node.addEventListener('click', function (event) {
      var link = event.target.closest ? event.target.closest('a.thumb') : null;
      if (!link || link.classList.contains('ph') || event.button !== 0 ||
          event.ctrlKey || event.metaKey || event.shiftKey || event.altKey) { return; }
      event.preventDefault();
      openViewer(index);
    });
    var head = el('div', 'head');
    head.appendChild(el('span', 'badge ' + job[1], job[1]));
    var id = el('span', 'jid', job[0]);
    id.title = String(job[0]);
    head.appendChild(id);
    head.appendChild(el('span', 'line', 'line ' + job[9]));
    node.appendChild(head);
    var pics = el('div', 'pics');
    var ins = el('div', 'ins');
    var outs = el('div', 'outs');
    job[5].forEach(function (pair, i) { ins.appendChild(thumb(pair, 'in', 'input ' + (i + 1))); });
    if (!job[5].length) { ins.appendChild(el('span', 'noout', 'inputs unknown')); }
    job[6].forEach(function (pair, i) {
      outs.appendChild(thumb(pair, 'out', 'output ' + (i + 1)));
    });
    if (!job[6].length) {
      var none = job[1] === 'succeeded' ? 'not downloaded' : 'no output';
      outs.appendChild(el('span', 'noout', none));
    }
    pics.appendChild(ins);
    pics.appendChild(el('span', 'arrow', '\u2192'));
    pics.appendChild(outs);
    node.appendChild(pics);
    var prompt = el('div', 'prompt', job[2] || '(prompt not available)');
    prompt.title = job[2];
    node.appendChild(prompt);
    node.appendChild(el('div', 'meta', 'size ' + (job[3] || 'auto') + ' \u00b7 n ' + job[4]));
    if (job[7] || job[8]) {
      var err = el('div', 'err', (job[7] || 'Error') + ': ' + job[8]);
      err.title = job[8];
      node.appendChild(err);
    }
    return node;
  }

  function pager(where, pages) {
    var box = document.querySelector('.pager[data-where="' + where + '"]');
    box.textContent = '';
    var prev = el('button', null, '\u2039 prev');
    prev.type = 'button';
    prev.disabled = st.page === 0;
    prev.addEventListener('click', function () { go(st.page - 1); });
    var next = el('button', null, 'next \u203a');
    next.type = 'button';
    next.disabled = st.page >= pages - 1;
    next.addEventListener('click', function () { go(st.page + 1); });
    box.appendChild(prev);
    box.appendChild(el('span', 'where', 'page ' + (st.page + 1) + ' of ' + pages + ' \u00b7 ' +
      view.length + ' of ' + jobs.length + ' jobs'));
    box.appendChild(next);
    if (where === 'top') {
      var select = el('select');
      select.setAttribute('aria-label', 'jobs per page');
      SIZES.forEach(function (size) {
        var option = el('option', null, size + ' per page');
        option.value = String(size);
        option.selected = size === st.size;
        select.appendChild(option);
      });
      select.addEventListener('change', function () { st.size = Number(this.value); go(0); });
      box.appendChild(select);
    }
  }

  function go(page) { st.page = page; render(); }

  function render() {
    var pages = Math.max(1, Math.ceil(view.length / st.size));
    st.page = Math.min(Math.max(0, st.page), pages - 1);
    var fragment = document.createDocumentFragment();
    var start = st.page * st.size;
    var end = Math.min(view.length, start + st.size);
    for (var i = start; i < end; i++) { fragment.appendChild(card(view[i], i)); }
    if (!view.length) { fragment.appendChild(el('p', 'empty', 'No job matches.')); }
    grid.textContent = '';
    grid.appendChild(fragment);
    pager('top', pages);
    pager('bottom', pages);
    document.body.dataset.rendered = String(end - start);
  }

  // One job at full size: inputs beside outputs; arrows walk the filtered jobs.
  var viewer = el('div');
  viewer.id = 'viewer';
  viewer.hidden = true;
  viewer.setAttribute('role', 'dialog');
  viewer.setAttribute('aria-modal', 'true');
  document.body.appendChild(viewer);
  var shown = -1;
  viewer.addEventListener('click', function (event) {
    if (event.target === viewer) { closeViewer(); }
  });

  function figure(pair, label) {
    var box = el('figure');
    if (pair[0] !== 'img') {
      box.appendChild(thumb(pair, 'in', label));
      box.appendChild(el('figcaption', null, label));
      return box;
    }
    var link = el('a');
    link.href = pair[1];
    link.target = '_blank';
    link.rel = 'noopener';
    var img = el('img');
    img.alt = label;
    img.decoding = 'async';
    var caption = el('figcaption', null, label);
    img.addEventListener('load', function () {
      caption.textContent = label + ' \u00b7 ' + img.naturalWidth + '\u00d7' + img.naturalHeight;
    });
    img.addEventListener('error', function () { caption.textContent = label + ' \u00b7 missing'; });
    img.src = pair[1];
    link.appendChild(img);
    box.appendChild(link);
    box.appendChild(caption);
    return box;
  }

  function openViewer(index) {
    if (index < 0 || index >= view.length) { return; }
    shown = index;
    var job = view[index];
    viewer.textContent = '';
    var box = el('div', 'vbox');
    var head = el('div', 'vhead');
    head.appendChild(el('span', 'badge ' + job[1], job[1]));
    head.appendChild(el('span', 'jid', job[0]));
    var where = (index + 1) + ' of ' + view.length + ' \u00b7 line ' + job[9];
    head.appendChild(el('span', 'line', where));
    var close = el('button', null, 'close \u2715');
    close.type = 'button';
    close.addEventListener('click', closeViewer);
    head.appendChild(close);
    box.appendChild(head);
    var pics = el('div', 'vpics');
    var ins = el('div', 'vins');
    var outs = el('div', 'vouts');
    job[5].forEach(function (pair, i) { ins.appendChild(figure(pair, 'input ' + (i + 1))); });
    job[6].forEach(function (pair, i) { outs.appendChild(figure(pair, 'output ' + (i + 1))); });
    if (!job[6].length) { outs.appendChild(el('span', 'noout', 'no output')); }
    pics.appendChild(ins);
    pics.appendChild(el('span', 'arrow', '\u2192'));
    pics.appendChild(outs);
    box.appendChild(pics);
    box.appendChild(el('div', 'vprompt', job[2] || '(prompt not available)'));
    box.appendChild(el('div', 'meta', 'size ' + (job[3] || 'auto') + ' \u00b7 n ' + job[4]));
    if (job[7] || job[8]) {
      box.appendChild(el('div', 'err', (job[7] || 'Error') + ': ' + job[8]));
    }
    box.appendChild(el('div', 'hint', '\u2190 \u2192 previous / next job \u00b7 Esc closes'));
    viewer.appendChild(box);
    viewer.hidden = false;
    close.focus();
  }

  function closeViewer() {
    if (viewer.hidden) { return; }
    viewer.hidden = true;
    viewer.textContent = '';
    var page = Math.floor(shown / st.size);
    if (page !== st.page) { go(page); }
  }

  document.addEventListener('keydown', function (event) {
    if (!viewer.hidden) {
      if (event.key === 'Escape') { closeViewer(); }
      if (event.key === 'ArrowRight') { openViewer(shown + 1); }
      if (event.key === 'ArrowLeft') { openViewer(shown - 1); }
      return;
    }
    if (event.target && /INPUT|SELECT|TEXTAREA/.test(event.target.tagName)) { return; }
    if (event.key === 'ArrowRight') { go(st.page + 1); }
    if (event.key === 'ArrowLeft') { go(st.page - 1); }
  });

  render();
}());
"""
