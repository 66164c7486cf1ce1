// The login page: the one page an anonymous browser may load (with its style sheet and script). Nothing inline,
// so the page's Content-Security-Policy can forbid every script and style but its own.
#include "plugin.h"

namespace cloudlet::manager {

std::string_view login_page_html() {
  return R"html(<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>cloudletd manager: log in</title>
<link rel="stylesheet" href="/manager/login.css">
</head>
<body>
<form id="login">
  <h1>cloudletd manager</h1>
  <label for="user">User</label>
  <input id="user" name="user" autocomplete="username" required value="admin">
  <label for="password">Password</label>
  <input id="password" name="password" type="password" autocomplete="current-password" required autofocus>
  <button type="submit">Log in</button>
  <div id="error" role="alert"></div>
</form>
<script type="module" src="/manager/login.js"></script>
</body>
</html>
)html";
}

std::string_view login_page_style() {
  return R"css(  body { font-family: system-ui, sans-serif; background: #f3f4f6; margin: 0; display: flex; min-height: 100vh;
         align-items: center; justify-content: center; }
  form { background: #fff; padding: 2rem; border-radius: 8px; box-shadow: 0 1px 4px #0002; width: min(22rem, 90vw); }
  h1 { font-size: 1.2rem; margin: 0 0 1rem; }
  label { display: block; margin: .8rem 0 .3rem; font-size: .9rem; }
  input { width: 100%; box-sizing: border-box; padding: .5rem; font-size: 1rem; }
  button { margin-top: 1.2rem; width: 100%; padding: .6rem; font-size: 1rem; background: #1d4ed8; color: #fff;
           border: 0; border-radius: 4px; }
  #error { color: #b91c1c; min-height: 1.2em; margin-top: .8rem; font-size: .9rem; }
)css";
}

std::string_view login_page_script() {
  return R"js(// Posts the form as JSON; on success the session cookie is set and the manager opens.
const form = document.getElementById('login');
const error = document.getElementById('error');
form.addEventListener('submit', async (event) => {
  event.preventDefault();
  error.textContent = '';
  const body = JSON.stringify({ user: form.user.value, password: form.password.value });
  try {
    const r = await fetch('/manager/api/login', {
      method: 'POST', headers: { 'Content-Type': 'application/json' }, body, credentials: 'same-origin' });
    if (r.ok) { location.assign('/manager/'); return; }
    const answer = await r.json().catch(() => ({}));
    error.textContent = answer.error || ('login failed (' + r.status + ')');
  } catch (e) {
    error.textContent = 'the cloudlet did not answer: ' + e.message;
  }
});
)js";
}

}  // namespace cloudlet::manager
