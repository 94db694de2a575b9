// Starts Swagger UI on the document of this daemon. Paths are relative to /docs, so the page
// also works behind a reverse proxy that mounts the daemon under a prefix. The validator badge is
// off (it would call validator.swagger.io), and the token typed into "Authorize" is kept only in
// this page's memory.
window.addEventListener("DOMContentLoaded", function () {
  var root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: root.getAttribute("data-spec"),
    domNode: root,
    deepLinking: true,
    validatorUrl: null,
    persistAuthorization: false,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
    // The operations list only: the Schemas section under it draws every model of the document
    // (most of the page's first layout; bench/first_paint.py); each operation still shows its own.
    defaultModelsExpandDepth: -1,
  });
});
