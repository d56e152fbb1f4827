-- nsprov-userdb.lua: a Dovecot Lua userdb that asks "nsprov serve" for a user's shared
-- namespaces (Dovecot 2.3 and 2.4).  Shipped with nsprov; do not edit the installed copy
-- except for the DEFAULTS table below (the only way to configure it on Dovecot 2.3).
--
-- It runs as the second userdb: the first one (passwd, ...) gives uid, gid and home, this
-- one merges namespace fields.  It never fails a login and never kills Dovecot's auth
-- process: every path runs under pcall, and whatever goes wrong (nsprov serve stopped,
-- socket missing, server hung, garbage or oversized reply, lua-socket not installed) it
-- returns USERDB_RESULT_USER_UNKNOWN, which the wiring's "result_failure = continue"
-- turns into a login with the first userdb's fields, after at most the timeout, with at
-- most one warning line per login.
--
-- Dovecot 2.4 (settings reach script_init() from lua_settings):
--
--   userdb passwd {
--     result_success = continue-ok
--   }
--   userdb lua {
--     lua_file = /etc/dovecot/nsprov-userdb.lua
--     use_worker = yes
--     result_failure = continue
--     result_internalfail = continue
--     lua_settings {
--       socket = /run/nsprov/userdb.sock
--       timeout = 1
--       max_reply = 7680
--     }
--   }
--
-- Dovecot 2.3 (args takes only file=, blocking= and cache_key=; settings are DEFAULTS):
--
--   userdb {
--     driver = passwd
--     result_success = continue-ok
--   }
--   userdb {
--     driver = lua
--     args = file=/etc/dovecot/nsprov-userdb.lua blocking=yes cache_key=
--     result_failure = continue
--     result_internalfail = continue
--   }
--
-- Cache policy: nsprov's answer is never put in Dovecot's auth cache.  nsprov serve has
-- its own cache, invalidated by every chmod, chown or ACL change.  On 2.3 the empty
-- "cache_key=" turns off the Lua userdb's default key (%u); on 2.4 a Lua userdb has no
-- cache key unless the script defines auth_userdb_get_cache_key(), which this one does not.
--
-- The lookup runs in the auth-worker processes (blocking=yes / use_worker = yes): as
-- root, so that a 0600 root socket is reachable, and one login per worker, so that a hung
-- server holds only the logins it is asked about.

-- Dovecot 2.3: edit these values (checked like lua_settings; a bad one falls back to BUILTIN).
local DEFAULTS = {
  -- nsprov serve's UNIX socket.
  socket = "/run/nsprov/userdb.sock",
  -- Seconds for the whole lookup: connect, send, receive.
  timeout = 1,
  -- Bytes of JSON at most: Dovecot refuses a userdb reply over 8 KiB (first userdb included).
  max_reply = 7680,
}

local BUILTIN = { socket = "/run/nsprov/userdb.sock", timeout = 1, max_reply = 7680 }

-- Longest user name asked about, in bytes.
local MAX_USER = 255
-- The redis reply header ("$7680\r\n") is this long at most.
local MAX_HEADER = 32

local settings = { socket = BUILTIN.socket, timeout = BUILTIN.timeout, max_reply = BUILTIN.max_reply }

local function log_warning(text)
  pcall(function() dovecot.i_warning("nsprov-userdb: " .. text) end)
end

-- lua-socket, loaded once; a missing module is reported once and every lookup then adds nothing.
local unix, gettime, socket_error
do
  local ok, mod = pcall(require, "socket.unix")
  local ok2, core = pcall(require, "socket")
  if ok and ok2 and (type(mod) == "table" or type(mod) == "function") and type(core) == "table" then
    unix = mod
    gettime = core.gettime
  else
    socket_error = tostring(ok and core or mod)
    log_warning("lua-socket is not installed (Debian: apt install lua-socket); no shared namespaces: "
      .. socket_error:gsub("%s+", " "))
  end
end

-- --- settings --------------------------------------------------------------------------

local function number_setting(where, name, value, low, high)
  local n = tonumber(value)
  if n == nil or n ~= n or n < low or n > high then
    log_warning(string.format("%s %s = %s is not a number in [%s, %s]; using %s", where,
      name, tostring(value), tostring(low), tostring(high), tostring(settings[name])))
    return settings[name]
  end
  return n
end

-- Applies one table of settings over the current ones; where names it in warnings.
local function apply_settings(where, args)
  if type(args) ~= "table" then
    return
  end
  for key, value in pairs(args) do
    if key == "socket" then
      if type(value) == "string" and value:sub(1, 1) == "/" then
        settings.socket = value
      else
        log_warning(where .. " socket = " .. tostring(value) .. " is not an absolute path; using "
          .. settings.socket)
      end
    elseif key == "timeout" then
      settings.timeout = number_setting(where, "timeout", value, 0.001, 60)
    elseif key == "max_reply" then
      settings.max_reply = math.floor(number_setting(where, "max_reply", value, 2, 8191))
    else
      log_warning("unknown " .. where .. " key " .. tostring(key) .. " ignored")
    end
  end
end

-- Dovecot calls script_init() once per process: with the lua_settings table on 2.4, with
-- no argument on 2.3 (which wants 0 back).  DEFAULTS first, then lua_settings.
function script_init(args)
  local ok, err = pcall(function()
    apply_settings("DEFAULTS", DEFAULTS)
    apply_settings("lua_settings", args)
  end)
  if not ok then
    log_warning("bad settings, using the built-in ones: " .. tostring(err))
    settings = { socket = BUILTIN.socket, timeout = BUILTIN.timeout, max_reply = BUILTIN.max_reply }
  end
  return 0
end

-- --- the flat JSON object nsprov serve answers --------------------------------------------

local ESCAPES = { ['"'] = '"', ["\\"] = "\\", ["/"] = "/", b = "\b", f = "\f", n = "\n", r = "\r", t = "\t" }

local function utf8_encode(cp)
  if cp < 0x80 then
    return string.char(cp)
  elseif cp < 0x800 then
    return string.char(0xC0 + math.floor(cp / 0x40), 0x80 + cp % 0x40)
  elseif cp < 0x10000 then
    return string.char(0xE0 + math.floor(cp / 0x1000), 0x80 + math.floor(cp / 0x40) % 0x40, 0x80 + cp % 0x40)
  end
  return string.char(0xF0 + math.floor(cp / 0x40000), 0x80 + math.floor(cp / 0x1000) % 0x40,
    0x80 + math.floor(cp / 0x40) % 0x40, 0x80 + cp % 0x40)
end

-- One JSON string starting at text[pos] == '"'; returns the value and the position after it.
local function json_string(text, pos)
  local parts = {}
  local i = pos + 1
  while true do
    local stop = text:find('["\\%c]', i)
    if stop == nil then
      error("unterminated string")
    end
    parts[#parts + 1] = text:sub(i, stop - 1)
    local c = text:sub(stop, stop)
    if c == '"' then
      return table.concat(parts), stop + 1
    elseif c ~= "\\" then
      error("control character in a string")
    end
    local e = text:sub(stop + 1, stop + 1)
    if ESCAPES[e] then
      parts[#parts + 1] = ESCAPES[e]
      i = stop + 2
    elseif e == "u" then
      local hex = text:match("^%x%x%x%x", stop + 2)
      if hex == nil then
        error("bad \\u escape")
      end
      local cp = tonumber(hex, 16)
      i = stop + 6
      if cp >= 0xD800 and cp <= 0xDBFF then
        local low = text:match("^\\u(%x%x%x%x)", i)
        local lo = low and tonumber(low, 16)
        if lo == nil or lo < 0xDC00 or lo > 0xDFFF then
          error("lone surrogate")
        end
        cp = 0x10000 + (cp - 0xD800) * 0x400 + (lo - 0xDC00)
        i = i + 6
      elseif cp >= 0xDC00 and cp <= 0xDFFF then
        error("lone surrogate")
      end
      parts[#parts + 1] = utf8_encode(cp)
    else
      error("bad escape")
    end
  end
end

-- The object {"key":"value",...} as a table; raises on anything else (nested values included).
local function parse_object(text)
  local out = {}
  local pos = text:find("%S")
  if pos == nil or text:sub(pos, pos) ~= "{" then
    error("not a JSON object")
  end
  pos = text:find("%S", pos + 1)
  if pos ~= nil and text:sub(pos, pos) == "}" then
    if text:find("%S", pos + 1) then
      error("data after the object")
    end
    return out
  end
  while true do
    if pos == nil or text:sub(pos, pos) ~= '"' then
      error("expected a string key")
    end
    local key, value
    key, pos = json_string(text, pos)
    pos = text:find("%S", pos)
    if pos == nil or text:sub(pos, pos) ~= ":" then
      error("expected ':'")
    end
    pos = text:find("%S", pos + 1)
    if pos == nil or text:sub(pos, pos) ~= '"' then
      error("expected a string value")
    end
    value, pos = json_string(text, pos)
    if out[key] ~= nil then
      error("duplicate key")
    end
    out[key] = value
    pos = text:find("%S", pos)
    local c = pos and text:sub(pos, pos)
    if c == "}" then
      if text:find("%S", pos + 1) then
        error("data after the object")
      end
      return out
    elseif c ~= "," then
      error("expected ',' or '}'")
    end
    pos = text:find("%S", pos + 1)
  end
end

-- Only namespace fields pass: a reply can never set uid, gid, home or any other field.
local function allowed_key(key)
  return key == "namespace" or key == "namespace+"
    or key:match("^namespace/[a-z0-9_-]+/[a-z_]+$") ~= nil
end

-- --- asking nsprov serve ---------------------------------------------------------------------

local function resp_get(key)
  return "*2\r\n$3\r\nGET\r\n$" .. #key .. "\r\n" .. key .. "\r\n"
end

-- The fields for key, or nil and why (nil, nil: the server knows nothing to add).
local function ask(key)
  local deadline = gettime() + settings.timeout
  local conn = unix()
  local function left()
    local t = deadline - gettime()
    if t <= 0 then
      error("timed out after " .. settings.timeout .. " s", 0)
    end
    conn:settimeout(t)
  end
  local ok, result, why = pcall(function()
    left()
    local done, err = conn:connect(settings.socket)
    if not done then
      error("cannot connect to " .. settings.socket .. ": " .. tostring(err), 0)
    end
    left()
    done, err = conn:send(resp_get(key))
    if not done then
      error("cannot send: " .. tostring(err), 0)
    end
    local header = ""
    while header:sub(-1) ~= "\n" do
      if #header >= MAX_HEADER then
        error("garbage reply", 0)
      end
      left()
      local c, rerr = conn:receive(1)
      if c == nil then
        error(rerr == "timeout" and ("timed out after " .. settings.timeout .. " s")
          or ("no reply: " .. tostring(rerr)), 0)
      end
      header = header .. c
    end
    if header == "$-1\r\n" then
      return nil, nil
    elseif header:sub(1, 1) == "-" then
      return nil, "nsprov serve failed the lookup"
    end
    local size = header:match("^%$(%d+)\r\n$")
    size = size and tonumber(size)
    if size == nil then
      error("garbage reply", 0)
    end
    if size > settings.max_reply then
      return nil, string.format("reply of %d bytes over max_reply = %d, dropped", size, settings.max_reply)
    end
    left()
    local body, rerr = conn:receive(size + 2)
    if body == nil then
      error(rerr == "timeout" and ("timed out after " .. settings.timeout .. " s")
        or ("reply cut short: " .. tostring(rerr)), 0)
    end
    if body:sub(-2) ~= "\r\n" then
      error("garbage reply", 0)
    end
    local parsed, fields = pcall(parse_object, body:sub(1, -3))
    if not parsed then
      return nil, "garbage reply"
    end
    for k in pairs(fields) do
      if not allowed_key(k) then
        return nil, "reply with a non-namespace field, dropped"
      end
    end
    return fields, nil
  end)
  pcall(conn.close, conn)
  if not ok then
    return nil, tostring(result)
  end
  return result, why
end

-- A user name nsprov can be asked about: no '/', no control characters, not over-long.
local function usable_user(user)
  return type(user) == "string" and user ~= "" and #user <= MAX_USER
    and not user:find("[/%c]")
end

local function lookup(req)
  local unknown = dovecot.auth.USERDB_RESULT_USER_UNKNOWN
  if unix == nil then
    return unknown, "lua-socket is not installed"
  end
  local user = req.user
  -- A failure result needs a string with it: 2.3 takes nil for an invalid return value.
  if not usable_user(user) then
    return unknown, "user name not asked about"
  end
  local key = "userdb/" .. user
  local home = req.userdb.home
  if type(home) == "string" and home:sub(1, 1) == "/" and not home:find("%c") then
    key = key .. "/" .. home
  end
  local fields, why = ask(key)
  if fields == nil or next(fields) == nil then
    if why ~= nil then
      pcall(function() req:log_warning("nsprov-userdb: no shared namespaces: " .. why) end)
    end
    return unknown, why or "nothing to add"
  end
  return dovecot.auth.USERDB_RESULT_OK, fields
end

function auth_userdb_lookup(req)
  local ok, result, value = pcall(lookup, req)
  if ok then
    return result, value
  end
  pcall(function()
    req:log_warning("nsprov-userdb: no shared namespaces: internal error: " .. tostring(result))
  end)
  local ok2, unknown = pcall(function() return dovecot.auth.USERDB_RESULT_USER_UNKNOWN end)
  -- USERDB_RESULT_USER_UNKNOWN is -2 in Dovecot 2.3 and 2.4 (src/auth/userdb.h).
  return ok2 and unknown or -2, "internal error"
end

-- doveadm ... -A iterates every userdb; users come from the first one, each once.
function auth_userdb_iterate()
  return {}
end
