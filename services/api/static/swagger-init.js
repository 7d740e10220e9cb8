// Starts Swagger UI on the API docs page (/schema/swagger). An external script, not an
// inline one: the page's Content-Security-Policy allows scripts from this origin only.
(function () {
  "use strict";
  const container = document.getElementById("swagger-container");
  window.ui = SwaggerUIBundle({
    url: container.dataset.specUrl,
    dom_id: "#swagger-container",
    deepLinking: true,
    showExtensions: true,
    showCommonExtensions: true,
    validatorUrl: null, // no badge from an external validator
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
  });
})();
