/*
 * Quota notices for JupyterLab (research workbench). Hand-written federated extension: JupyterLab
 * loads this file, then calls init() and get("./extension") on window._JUPYTERLAB[name].
 * It polls <server>/workbench/quota/notices (the server relays the quota service's answer) and
 * shows each new notice through the "apputils:notify" command.
 */
(function () {
  "use strict";
  var NAME = "@workbench/quota-notices";
  var SEEN_KEY = "workbench-quota-notices-seen";
  var EVERY_MS = 60000;

  function pageConfig() {
    var element = document.getElementById("jupyter-config-data");
    try {
      return element ? JSON.parse(element.textContent) : {};
    } catch (error) {
      return {};
    }
  }

  function noticesUrl() {
    var base = pageConfig().baseUrl || "/";
    return base.replace(/\/?$/, "/") + "workbench/quota/notices";
  }

  function xsrfToken() {
    var match = document.cookie.match("\\b_xsrf=([^;]*)\\b");
    return match ? decodeURIComponent(match[1]) : "";
  }

  function seenIds() {
    try {
      return JSON.parse(window.localStorage.getItem(SEEN_KEY) || "[]");
    } catch (error) {
      return [];
    }
  }

  function remember(ids) {
    try {
      window.localStorage.setItem(SEEN_KEY, JSON.stringify(ids.slice(-200)));
    } catch (error) {
      /* private mode: notices may show again after a reload */
    }
  }

  var plugin = {
    id: NAME + ":plugin",
    description: "Shows the quota service's budget warnings and stops as notifications.",
    autoStart: true,
    activate: function (app) {
      var url = noticesUrl();
      function check() {
        return fetch(url, {
          credentials: "same-origin",
          headers: { Accept: "application/json", "X-XSRFToken": xsrfToken() }
        })
          .then(function (response) {
            return response.ok ? response.json() : { notices: [] };
          })
          .then(function (body) {
            var seen = seenIds();
            (body.notices || []).forEach(function (notice) {
              if (seen.indexOf(notice.id) >= 0) {
                return;
              }
              seen.push(notice.id);
              var type = notice.severity === "error" ? "error" : notice.severity === "warning" ? "warning" : "info";
              app.commands.execute("apputils:notify", {
                message: notice.message,
                type: type,
                options: { autoClose: false, data: { quotaNotice: notice.id } }
              });
            });
            remember(seen);
          })
          .catch(function (error) {
            console.warn("quota notices unavailable:", error);
          });
      }
      app.restored.then(check);
      window.setInterval(check, EVERY_MS);
    }
  };

  var registry = (window._JUPYTERLAB = window._JUPYTERLAB || {});
  registry[NAME] = {
    init: function () {
      return Promise.resolve();
    },
    get: function (module) {
      if (module !== "./extension") {
        return Promise.reject(new Error(NAME + " has no module " + module));
      }
      return Promise.resolve(function () {
        return { __esModule: true, default: [plugin] };
      });
    }
  };
})();
