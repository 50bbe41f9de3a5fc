"""The init script that gives a page what Playwright's context options can't set.

Runs in every frame's main world before any page script (``context.add_init_script``). It sets, on
the prototypes (so the instances look untouched) and with getters/functions whose ``toString``
reads ``[native code]``:

- ``navigator.platform``, ``hardwareConcurrency``, ``deviceMemory`` from the identity;
- WebGL ``UNMASKED_VENDOR/RENDERER`` (the real one is SwiftShader, a known headless tell);
- ``outerWidth/outerHeight`` and ``screen.availWidth/availHeight/colorDepth``;
- canvas noise (``toDataURL``, ``toBlob``, ``getImageData``) and audio noise (``getChannelData``,
  ``copyFromChannel``, ``getFloatFrequencyData``), seeded per identity: the same drawing gives the
  same result within an identity and a different one across identities;
- in workers, also ``userAgent``, ``appVersion``, ``languages``/``language``, client hints and
  ``Notification.permission``, which a worker would otherwise take from the engine. Workers made
  from ``blob:`` URLs start with this script (their source is prefixed); every worker (dedicated,
  shared, service) also gets it from the slot's CDP session (:mod:`fleet_ray.browser.scopes`);
- console methods that hide the Chrome DevTools Protocol: with CDP's Runtime domain on, logging an
  Error makes the inspector call ``Error.prepareStackTrace`` (a common CDP-detection trick), so the
  wrappers lift a page-defined ``prepareStackTrace`` for the duration of the call.

``navigator.webdriver`` is left alone: Chromium reports ``false`` natively once the slot launches it
without ``--enable-automation`` and with ``AutomationControlled`` disabled.
User agent, client-hint brands (``navigator.userAgentData`` and ``Sec-CH-UA*`` headers) and
``navigator.platform`` are also set natively per page through CDP ``Emulation.setUserAgentOverride``.
"""

from __future__ import annotations

import json
from typing import Any

_SCRIPT = r"""
(function stealth(cfg) {
  const nativeToString = Function.prototype.toString;
  const source = nativeToString.call(stealth);
  const masks = new WeakMap();
  const mask = (fn, text) => { masks.set(fn, text); return fn; };
  const toString = mask({ toString() {
    if (masks.has(this)) return masks.get(this);
    return nativeToString.call(this);
  } }.toString, 'function toString() { [native code] }');
  Object.defineProperty(Function.prototype, 'toString', { value: toString, writable: true, configurable: true, enumerable: false });

  const getter = (proto, prop, value) => {
    const desc = Object.getOwnPropertyDescriptor(proto, prop);
    if (!desc || !desc.get) return;
    const native = desc.get;
    const get = mask(Object.getOwnPropertyDescriptor({ get [prop]() {
      if (this !== proto && !(proto.isPrototypeOf(this))) return native.call(this);
      return typeof value === 'function' ? value.call(this) : value;
    } }, prop).get, `function get ${prop}() { [native code] }`);
    Object.defineProperty(proto, prop, { get, set: desc.set, enumerable: desc.enumerable, configurable: true });
  };
  const method = (proto, name, make) => {
    const desc = Object.getOwnPropertyDescriptor(proto, name);
    if (!desc || typeof desc.value !== 'function') return;
    const original = desc.value;
    const wrapped = mask(make(original), `function ${name}() { [native code] }`);
    Object.defineProperty(wrapped, 'length', { value: original.length, configurable: true });
    Object.defineProperty(proto, name, { value: wrapped, writable: desc.writable, enumerable: desc.enumerable, configurable: true });
  };
  const named = (name, fn) => ({ [name](...args) { return fn.call(this, args); } })[name];

  // -- navigator (pages and workers) ----------------------------------------------------------
  const N = (self.Navigator || self.WorkerNavigator).prototype;
  getter(N, 'platform', cfg.platform);
  getter(N, 'hardwareConcurrency', cfg.hardwareConcurrency);
  getter(N, 'deviceMemory', cfg.deviceMemory);

  // -- user agent where the CDP override has not reached ---------------------------------------
  // The slot sets user agent, client hints and languages natively (Emulation.setUserAgentOverride) on
  // pages and dedicated workers before they run. A scope it could not reach first — a popup's first
  // document, a service worker (it starts from the browser's own user agent) — still shows the
  // engine's values: there they are read from the identity. Headless workers also say
  // Notification.permission "denied" where the page says "default".
  const isWorker = typeof WorkerGlobalScope !== 'undefined' && self instanceof WorkerGlobalScope;
  if (isWorker || self.navigator.userAgent !== cfg.userAgent) {
    const languages = Object.freeze(cfg.languages.slice());
    getter(N, 'userAgent', cfg.userAgent);
    getter(N, 'appVersion', cfg.userAgent.replace(/^Mozilla\//, ''));
    getter(N, 'languages', languages);
    getter(N, 'language', cfg.languages[0]);
    const UAD = self.NavigatorUAData && self.NavigatorUAData.prototype;
    if (UAD && cfg.uaData) {
      const ua = cfg.uaData;
      const list = (items) => Object.freeze(items.map(b => Object.freeze({ brand: b.brand, version: b.version })));
      const brands = list(ua.brands);
      getter(UAD, 'brands', brands);
      getter(UAD, 'mobile', ua.mobile);
      getter(UAD, 'platform', ua.platform);
      const low = () => ({ brands: brands.map(b => ({ ...b })), mobile: ua.mobile, platform: ua.platform });
      method(UAD, 'getHighEntropyValues', (orig) => named('getHighEntropyValues', function (args) {
        if (!(this instanceof self.NavigatorUAData)) return orig.apply(this, args);
        const out = low();
        for (const hint of Array.from(args[0] || [])) {
          if (hint === 'fullVersionList') out.fullVersionList = ua.high.fullVersionList.map(b => ({ ...b }));
          else if (hint in ua.high) out[hint] = ua.high[hint];
        }
        return Promise.resolve(out);
      }));
      method(UAD, 'toJSON', (orig) => named('toJSON', function (args) {
        return (this instanceof self.NavigatorUAData) ? low() : orig.apply(this, args);
      }));
    }
  }
  if (isWorker && self.Notification) getter(self.Notification, 'permission', cfg.notification);

  // -- window and screen ------------------------------------------------------------------------
  const winGetter = (prop, value) => {
    const desc = Object.getOwnPropertyDescriptor(window, prop);
    if (!desc || !desc.get) return;
    const get = mask(Object.getOwnPropertyDescriptor({ get [prop]() { return value; } }, prop).get,
      `function get ${prop}() { [native code] }`);
    Object.defineProperty(window, prop, { get, set: desc.set, enumerable: desc.enumerable, configurable: true });
  };
  if (typeof window !== 'undefined' && window.top === window) {
    winGetter('outerWidth', cfg.outerWidth);
    winGetter('outerHeight', cfg.outerHeight);
  }
  if (self.Screen) {
    const S = Screen.prototype;
    getter(S, 'availWidth', cfg.availWidth);
    getter(S, 'availHeight', cfg.availHeight);
    getter(S, 'colorDepth', cfg.colorDepth);
    getter(S, 'pixelDepth', cfg.colorDepth);
  }

  // -- WebGL ------------------------------------------------------------------------------------
  for (const C of [self.WebGLRenderingContext, self.WebGL2RenderingContext]) {
    if (!C) continue;
    method(C.prototype, 'getParameter', (orig) => named('getParameter', function (args) {
      if (this instanceof C) {
        if (args[0] === 0x9245) return cfg.webglVendor;
        if (args[0] === 0x9246) return cfg.webglRenderer;
      }
      return orig.apply(this, args);
    }));
  }

  // -- seeded noise ------------------------------------------------------------------------------
  const rng = (seed) => () => {
    seed |= 0; seed = (seed + 0x6D2B79F5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0);
  };
  const noisePixels = (data) => {
    const next = rng(cfg.seed);
    for (let i = 0; i < data.length; i += 4) {
      const r = next();
      if (data[i + 3] !== 0 && (r & 15) === 0) data[i + ((r >>> 4) % 3)] ^= 1;
    }
  };
  const getImageData = self.CanvasRenderingContext2D ? CanvasRenderingContext2D.prototype.getImageData : null;
  for (const Ctx of [self.CanvasRenderingContext2D, self.OffscreenCanvasRenderingContext2D]) {
    if (!Ctx) continue;
    method(Ctx.prototype, 'getImageData', (orig) => named('getImageData', function (args) {
      const image = orig.apply(this, args);
      noisePixels(image.data);
      return image;
    }));
  }
  if (self.HTMLCanvasElement && getImageData) {
  const noisyCopy = (canvas) => {
    if (!canvas.width || !canvas.height) return null;
    const copy = document.createElement('canvas');
    copy.width = canvas.width; copy.height = canvas.height;
    const ctx = copy.getContext('2d');
    ctx.drawImage(canvas, 0, 0);
    const image = getImageData.call(ctx, 0, 0, copy.width, copy.height);
    noisePixels(image.data);
    ctx.putImageData(image, 0, 0);
    return copy;
  };
  const HC = HTMLCanvasElement.prototype;
  method(HC, 'toDataURL', (orig) => named('toDataURL', function (args) {
    const copy = (this instanceof HTMLCanvasElement) ? noisyCopy(this) : null;
    return orig.apply(copy || this, args);
  }));
  method(HC, 'toBlob', (orig) => named('toBlob', function (args) {
    const copy = (this instanceof HTMLCanvasElement) ? noisyCopy(this) : null;
    return orig.apply(copy || this, args);
  }));
  }

  const noised = new WeakSet();
  const noiseAudio = (data, channel) => {
    if (noised.has(data)) return;
    noised.add(data);
    const next = rng(cfg.seed ^ ((channel + 1) * 0x9E3779B9));
    for (let i = 0; i < data.length; i += 97) data[i] += ((next() % 2000) - 1000) * 1e-10 + 1e-7 * ((next() & 1) ? 1 : -1);
  };
  if (self.AudioBuffer) {
    const AB = AudioBuffer.prototype;
    const getChannelData = AB.getChannelData;
    method(AB, 'getChannelData', (orig) => named('getChannelData', function (args) {
      const data = orig.apply(this, args);
      noiseAudio(data, args[0] | 0);
      return data;
    }));
    method(AB, 'copyFromChannel', (orig) => named('copyFromChannel', function (args) {
      if (this instanceof AudioBuffer) noiseAudio(getChannelData.call(this, args[1] | 0), args[1] | 0);
      return orig.apply(this, args);
    }));
  }
  if (self.AnalyserNode) {
    method(AnalyserNode.prototype, 'getFloatFrequencyData', (orig) => named('getFloatFrequencyData', function (args) {
      const out = orig.apply(this, args);
      const arr = args[0];
      if (arr && arr.length) { const next = rng(cfg.seed); for (let i = 0; i < arr.length; i += 7) arr[i] += ((next() % 200) - 100) * 1e-4; }
      return out;
    }));
  }

  // -- hide the DevTools protocol from console-based probes ----------------------------------
  for (const name of ['log', 'debug', 'info', 'warn', 'error', 'dir', 'dirxml', 'table', 'trace', 'assert']) {
    const orig = console[name];
    if (typeof orig !== 'function') continue;
    const wrapped = mask(named(name, function (args) {
      const desc = Object.getOwnPropertyDescriptor(Error, 'prepareStackTrace');
      if (!desc) return orig.apply(this, args);
      delete Error.prepareStackTrace;
      try { return orig.apply(this, args); } finally { Object.defineProperty(Error, 'prepareStackTrace', desc); }
    }), `function ${name}() { [native code] }`);
    Object.defineProperty(console, name, { value: wrapped, writable: true, enumerable: true, configurable: true });
  }

  // -- blob workers start with this script too --------------------------------------------------
  // (the slot's CDP session also runs it in every worker, but a worker can start before that lands:
  // one made from a blob — how fingerprinting scripts probe a worker — carries it from its first line)
  if (typeof window !== 'undefined' && self.Worker && self.Blob && self.URL) {
    const prelude = `(${source})(${JSON.stringify(cfg)});\n`;
    const blobs = new Map();
    const createObjectURL = URL.createObjectURL;
    const revokeObjectURL = URL.revokeObjectURL;
    const U = Object.getOwnPropertyDescriptor(URL, 'createObjectURL');
    Object.defineProperty(URL, 'createObjectURL', { ...U, value: mask(named('createObjectURL', function (args) {
      const url = createObjectURL.apply(this, args);
      const obj = args[0];
      if (obj instanceof Blob && (obj.type === '' || /javascript|ecmascript/i.test(obj.type))) {
        blobs.set(url, obj);
        if (blobs.size > 64) blobs.delete(blobs.keys().next().value);
      }
      return url;
    }), 'function createObjectURL() { [native code] }') });
    const R = Object.getOwnPropertyDescriptor(URL, 'revokeObjectURL');
    Object.defineProperty(URL, 'revokeObjectURL', { ...R, value: mask(named('revokeObjectURL', function (args) {
      blobs.delete(String(args[0]));
      return revokeObjectURL.apply(this, args);
    }), 'function revokeObjectURL() { [native code] }') });
    const NativeWorker = self.Worker;
    const Worker = mask(function Worker(url, options) {
      if (!new.target) return NativeWorker(url, options);
      let target = url;
      try {
        const blob = blobs.get(String(url));
        if (blob) target = createObjectURL(new Blob([prelude, blob], { type: blob.type || 'application/javascript' }));
      } catch (e) { target = url; }
      return Reflect.construct(NativeWorker, arguments.length > 1 ? [target, options] : [target], new.target);
    }, 'function Worker() { [native code] }');
    Object.defineProperty(Worker, 'prototype', { value: NativeWorker.prototype, writable: false });
    Object.defineProperty(Worker, 'length', { value: NativeWorker.length });
    Object.defineProperty(NativeWorker.prototype, 'constructor', { value: Worker, writable: true, configurable: true, enumerable: false });
    const W = Object.getOwnPropertyDescriptor(self, 'Worker');
    Object.defineProperty(self, 'Worker', { ...W, value: Worker });
  }
})(__CONFIG__);
"""


def init_script(config: dict[str, Any]) -> str:
    """The init script for one identity (``Identity.script_config()``)."""
    return _SCRIPT.replace("__CONFIG__", json.dumps(config, separators=(",", ":")))
