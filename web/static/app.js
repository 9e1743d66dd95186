// sse-service demo page.
//
// Plain JavaScript, no build step, no dependencies. Everything received from
// the network is rendered with textContent, never as HTML, and the page runs
// under a Content-Security-Policy of default-src 'self'.
'use strict';

(function () {
  const TOPIC_RE = /^[A-Za-z0-9._~:/@-]{1,200}$/;
  const MAX_LOG_ITEMS = 100;
  const TOKEN_KEY = 'sse-service.demo.publish-token';
  // Event types with a dedicated handler: "message" is onmessage, "sse-gap"
  // has its own listener, and "open"/"error" go through onopen/onerror.
  const RESERVED_TYPES = new Set(['message', 'sse-gap', 'sse-auth-expired', 'open', 'error']);
  // The cookie the service reads a subscriber's token from (SSE_AUTH_COOKIE).
  const TOKEN_COOKIE = 'sse_token';

  const $ = (id) => document.getElementById(id);
  const el = {
    clock: $('clock'),
    clockLocal: $('clock-local'),
    clockState: $('clock-state'),
    clockLastId: $('clock-last-id'),
    clockCount: $('clock-count'),
    clockReconnect: $('clock-reconnect'),
    subscribeForm: $('subscribe-form'),
    topicInput: $('topic-input'),
    topicTypes: $('topic-types'),
    topicToken: $('topic-token'),
    topicError: $('topic-error'),
    topicState: $('topic-state'),
    topicCurrent: $('topic-current'),
    topicLastId: $('topic-last-id'),
    topicCount: $('topic-count'),
    events: $('events'),
    clearLog: $('clear-log'),
    publishForm: $('publish-form'),
    pubTopic: $('pub-topic'),
    pubType: $('pub-type'),
    pubData: $('pub-data'),
    pubToken: $('pub-token'),
    publishBtn: $('publish-btn'),
    pubResult: $('pub-result'),
    curlSubscribe: $('curl-subscribe'),
    curlPublish: $('curl-publish'),
  };

  const localFormat = new Intl.DateTimeFormat(undefined, {
    weekday: 'short', year: 'numeric', month: 'short', day: 'numeric',
    hour: '2-digit', minute: '2-digit', second: '2-digit', timeZoneName: 'short',
  });
  const logTimeFormat = new Intl.DateTimeFormat(undefined, {
    hour: '2-digit', minute: '2-digit', second: '2-digit',
  });

  // ---- helpers -------------------------------------------------------------

  function setState(badge, state) {
    badge.textContent = state;
    badge.dataset.state = state;
    // A clock that is not receiving is shown dimmed: its time is stale.
    if (badge === el.clockState) el.clock.classList.toggle('stale', state !== 'open');
  }

  // A MessageEvent carries a string in data; the plain Event that
  // EventSource fires for connection changes does not. An event whose type
  // is literally "open" or "error" reaches onopen/onerror as a MessageEvent.
  function isMessage(ev) {
    return typeof ev.data === 'string';
  }

  function parseTypes(text) {
    return text.split(',').map((s) => s.trim()).filter((s) => s !== '');
  }

  function storageGet(key) {
    try {
      return window.sessionStorage.getItem(key) || '';
    } catch (_) {
      return '';
    }
  }

  function storageSet(key, value) {
    try {
      if (value) {
        window.sessionStorage.setItem(key, value);
      } else {
        window.sessionStorage.removeItem(key);
      }
    } catch (_) {
      // Storage disabled: the token simply is not remembered.
    }
  }

  function span(className, text) {
    const s = document.createElement('span');
    s.className = className;
    s.textContent = text;
    return s;
  }

  // Opens an EventSource and keeps the state badge in sync with it. The
  // returned object closes it; onMessage receives every MessageEvent of the
  // stream, whatever its type, except sse-gap which goes to onGap.
  function openStream(url, badge, onMessage, onGap, onExpired) {
    const es = new EventSource(url);
    setState(badge, 'connecting');
    es.onopen = (ev) => {
      setState(badge, 'open');
      if (isMessage(ev)) onMessage(ev);
    };
    es.onerror = (ev) => {
      if (isMessage(ev)) {
        onMessage(ev);
        return;
      }
      // CONNECTING after an error means the browser retries on its own;
      // CLOSED means it gave up (HTTP error status or wrong content type).
      setState(badge, es.readyState === EventSource.CLOSED ? 'closed' : 'reconnecting');
    };
    es.onmessage = onMessage;
    es.addEventListener('sse-gap', onGap);
    // The token expired: the service ended the stream. Close it, or the
    // browser would reconnect with the old token and get a 401.
    es.addEventListener('sse-auth-expired', (ev) => {
      es.close();
      setState(badge, 'expired');
      if (onExpired) onExpired(ev);
    });
    return {
      es: es,
      types: new Set(),
      listen(type) {
        if (RESERVED_TYPES.has(type) || this.types.has(type)) return;
        this.types.add(type);
        es.addEventListener(type, onMessage);
      },
      close() {
        es.close();
        setState(badge, 'closed');
      },
    };
  }

  // ---- event log -----------------------------------------------------------

  function addLogItem(li) {
    el.events.prepend(li);
    while (el.events.children.length > MAX_LOG_ITEMS) {
      el.events.lastElementChild.remove();
    }
  }

  // logItem adds one entry to the log: a received event (class "event",
  // its data shown as is) or a notice from the service (class "notice").
  function logItem(kind, type, idText, topic, id, body) {
    const li = document.createElement('li');
    li.className = kind;
    li.dataset.id = id;
    const meta = document.createElement('div');
    meta.className = 'meta';
    meta.append(
      span('type', type),
      span('id', idText),
      span('topic', topic),
      span('time', logTimeFormat.format(new Date())),
    );
    const data = document.createElement(kind === 'event' ? 'pre' : 'p');
    data.className = 'data';
    data.textContent = body;
    li.append(meta, data);
    addLogItem(li);
  }

  function logEvent(topic, ev) {
    logItem('event', ev.type, ev.lastEventId ? 'id ' + ev.lastEventId : 'no id', topic, ev.lastEventId, ev.data);
  }

  function logGap(topic, ev) {
    let reason = ev.data;
    let lastId = ev.lastEventId;
    try {
      const info = JSON.parse(ev.data);
      if (info && typeof info === 'object') {
        if (typeof info.reason === 'string' && info.reason !== '') reason = info.reason;
        if (typeof info.lastEventId === 'string' && info.lastEventId !== '') lastId = info.lastEventId;
      }
    } catch (_) {
      // Not JSON: show the raw data as the reason.
    }
    logItem('notice', 'sse-gap', lastId ? 'after id ' + lastId : 'no id', topic, ev.lastEventId,
      'history gap: ' + (reason || 'unknown') + ' — reload state');
  }

  // The token of a private topic expired (sse-auth-expired has no id: the
  // last event id is still that of the last event).
  function logExpired(topic, ev) {
    logItem('notice', 'sse-auth-expired', ev.lastEventId ? 'after id ' + ev.lastEventId : 'no id', topic,
      ev.lastEventId, 'token expired — enter a new token and press Subscribe: the stream resumes after the last id');
  }

  el.clearLog.addEventListener('click', () => {
    el.events.replaceChildren();
  });

  // ---- clock stream --------------------------------------------------------

  const RFC3339_RE = /^(\d{4}-\d{2}-\d{2})(T)(\d{2}:\d{2}:\d{2})(\.\d+)?(Z|[+-]\d{2}:\d{2})$/;
  let clock = null;
  let clockCount = 0;

  // Renders the timestamp exactly as received (so #clock's text is the raw
  // data), split into spans so the time of day can be shown larger.
  function renderClock(text) {
    const m = RFC3339_RE.exec(text);
    if (!m) {
      el.clock.textContent = text;
    } else {
      const time = span('time', '');
      time.append(span('tod', m[3] + (m[4] || '')), span('zone', m[5]));
      const date = span('date', m[1]);
      date.append(span('sep', m[2]));
      el.clock.replaceChildren(date, time);
    }
    const d = new Date(text);
    el.clockLocal.textContent = Number.isNaN(d.getTime()) ? '—' : localFormat.format(d);
  }

  function onClockMessage(ev) {
    clockCount++;
    el.clockCount.textContent = String(clockCount);
    el.clockLastId.textContent = ev.lastEventId || '—';
    renderClock(ev.data);
  }

  function openClock() {
    if (clock) clock.close();
    clock = openStream('/v1/events?topic=clock', el.clockState, onClockMessage, (ev) => logGap('clock', ev));
    el.clockReconnect.hidden = true;
    // Offer a manual reconnect once the browser has given up.
    clock.es.addEventListener('error', (ev) => {
      if (!isMessage(ev) && clock && clock.es.readyState === EventSource.CLOSED) el.clockReconnect.hidden = false;
    });
  }

  el.clockReconnect.addEventListener('click', openClock);

  // ---- topic stream --------------------------------------------------------

  let topic = null; // { name, stream }
  let topicCount = 0;
  // Every extra event type ever asked for; a new subscription listens for
  // all of them.
  const knownTypes = new Set();

  function validateTopic(name) {
    if (name === '') return 'Enter a topic name.';
    if (!TOPIC_RE.test(name)) {
      return 'Use 1–200 characters: letters, digits and . _ ~ : / @ -';
    }
    return '';
  }

  function listenFor(type) {
    if (!type || RESERVED_TYPES.has(type)) return;
    knownTypes.add(type);
    if (topic) topic.stream.listen(type);
  }

  // The topic stream's last event id, to resume after a token expired.
  let topicLastId = '';

  // setTokenCookie sends the token with the stream request (EventSource
  // cannot set headers), or forgets it.
  function setTokenCookie(token) {
    if (token) {
      document.cookie = TOKEN_COOKIE + '=' + encodeURIComponent(token) + '; path=/; SameSite=Strict';
    } else {
      document.cookie = TOKEN_COOKIE + '=; path=/; max-age=0; SameSite=Strict';
    }
  }

  function subscribe(name) {
    const previous = topic ? topic.name : '';
    if (topic) topic.stream.close();
    // Subscribing to the same topic again resumes after the last event
    // seen (after an expired token, nothing is lost); another topic starts
    // live.
    const resumeFrom = name === previous ? topicLastId : '';
    if (name !== previous) topicLastId = '';
    setTokenCookie(el.topicToken.value.trim());
    topicCount = 0;
    el.topicCount.textContent = '0';
    el.topicLastId.textContent = topicLastId || '—';
    el.topicCurrent.textContent = name;
    const onMessage = (ev) => {
      topicCount++;
      if (ev.lastEventId) topicLastId = ev.lastEventId;
      el.topicCount.textContent = String(topicCount);
      el.topicLastId.textContent = ev.lastEventId || '—';
      logEvent(name, ev);
    };
    let url = '/v1/events?topic=' + encodeURIComponent(name);
    if (resumeFrom) url += '&lastEventId=' + encodeURIComponent(resumeFrom);
    const stream = openStream(url, el.topicState, onMessage, (ev) => logGap(name, ev), (ev) => logExpired(name, ev));
    topic = { name: name, stream: stream };
    knownTypes.forEach((t) => stream.listen(t));
    // The publish form follows the subscription unless the user chose
    // another topic there.
    if (el.pubTopic.value.trim() === '' || el.pubTopic.value.trim() === previous) {
      el.pubTopic.value = name;
    }
    el.pubTopic.placeholder = name;
  }

  el.topicInput.addEventListener('input', () => {
    if (el.topicInput.getAttribute('aria-invalid') === 'true') {
      const msg = validateTopic(el.topicInput.value.trim());
      el.topicError.textContent = msg;
      el.topicInput.setAttribute('aria-invalid', msg ? 'true' : 'false');
    }
  });

  el.subscribeForm.addEventListener('submit', (e) => {
    e.preventDefault();
    const name = el.topicInput.value.trim();
    const msg = validateTopic(name);
    el.topicError.textContent = msg;
    el.topicInput.setAttribute('aria-invalid', msg ? 'true' : 'false');
    if (msg) {
      el.topicInput.focus();
      return;
    }
    parseTypes(el.topicTypes.value).forEach(listenFor);
    subscribe(name);
  });

  // ---- publish -------------------------------------------------------------

  el.pubToken.value = storageGet(TOKEN_KEY);
  el.pubToken.addEventListener('input', () => storageSet(TOKEN_KEY, el.pubToken.value));

  function showResult(kind, text) {
    el.pubResult.dataset.kind = kind;
    el.pubResult.textContent = text;
  }

  async function publish() {
    const name = el.pubTopic.value.trim() || (topic ? topic.name : '');
    const msg = validateTopic(name);
    if (msg) {
      showResult('error', 'Topic: ' + msg);
      el.pubTopic.focus();
      return;
    }
    const type = el.pubType.value.trim();
    const token = el.pubToken.value;
    storageSet(TOKEN_KEY, token);
    // Listen for the type before publishing so the event is not missed.
    listenFor(type);

    el.publishBtn.disabled = true;
    showResult('pending', 'Publishing…');
    try {
      const res = await fetch('/v1/topics/' + encodeURIComponent(name) + '/events', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', Authorization: 'Bearer ' + token },
        body: JSON.stringify({ event: type || undefined, data: el.pubData.value }),
      });
      let body = null;
      const text = await res.text();
      try {
        body = JSON.parse(text);
      } catch (_) {
        body = null;
      }
      if (res.ok) {
        const id = body && typeof body.id === 'string' ? body.id : '';
        showResult('ok', res.status + ' ' + (res.statusText || 'OK') + (id ? ' — id ' + id : ''));
      } else {
        const detail = body && typeof body.error === 'string' ? body.error : text.trim() || res.statusText;
        showResult('error', res.status + ' — ' + (detail || 'request failed'));
      }
    } catch (err) {
      showResult('error', 'Network error: ' + (err && err.message ? err.message : String(err)));
    } finally {
      el.publishBtn.disabled = false;
    }
  }

  el.publishForm.addEventListener('submit', (e) => {
    e.preventDefault();
    publish();
  });

  // ---- footer --------------------------------------------------------------

  const base = window.location.protocol + '//' + window.location.host;
  el.curlSubscribe.textContent = "curl -N '" + base + "/v1/events?topic=clock'";
  el.curlPublish.textContent = "curl -X POST -H 'Authorization: Bearer TOKEN' " +
    "-H 'Content-Type: application/json' -d '{\"data\":\"hello\"}' " + base + '/v1/topics/demo/events';

  // ---- lifecycle -----------------------------------------------------------

  // Close the streams when the page goes away (this also keeps the page
  // eligible for the back/forward cache) and reopen them if it comes back.
  window.addEventListener('pagehide', () => {
    if (clock) clock.close();
    if (topic) topic.stream.close();
  });
  window.addEventListener('pageshow', (e) => {
    if (!e.persisted) return;
    openClock();
    if (topic) subscribe(topic.name);
  });

  openClock();
})();
