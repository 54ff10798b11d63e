// `burla dashboard` links to /#token=...: the fragment never reaches a server log.
// (A file of its own: the Content-Security-Policy runs no inline script.)
const m = location.hash.match(/token=([^&]+)/);
if (m) {
  history.replaceState(null, "", location.pathname);
  document.getElementById("token").value = decodeURIComponent(m[1]);
  document.querySelector("form").submit();
}
