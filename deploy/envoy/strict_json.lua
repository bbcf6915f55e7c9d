-- genmesh gateway: refuse REST bodies the gRPC-JSON transcoder would quietly change.
--
-- The transcoder drops JSON fields the target message does not have ({"epochs": 5} ran with the
-- default number of epochs). This filter runs before it, on the transcoded routes, and answers 400
-- (the gateway's local-reply mapper wraps the text as {"code": 3, "message": ...}) for
--   * a field the message does not have, naming it and, for a near miss, the field probably meant
--     (in the body, or as a query parameter on any route);
--   * a value of the wrong JSON type ("detach": "yes", a number for an object, ...);
--   * an enum name the field does not have;
--   * two members of one oneof ("init_image_data" and "init_image_ref");
--   * a body that is not JSON.
-- The schema below is generated from the descriptor set the transcoder uses
-- (servers/mesh/request_fields.py), so the two always agree. Long strings (base64 images) are skipped
-- with plain searches, never copied or decoded.

local SCHEMA_JSON = __SCHEMA_JSON__

local NULL = {}
local MAX_DEPTH = 64
local SHORT_STRING = 256 -- longer strings are skipped, not decoded

-- JSON decoding --------------------------------------------------------------------------------------

local decode_value

local function fail(position, what)
  error({ json = true, message = "request body: not valid JSON (" .. what .. " at byte " .. position .. ")" }, 0)
end

local function skip_space(text, position)
  local _, last = string.find(text, "^[ \n\r\t]*", position)
  return last + 1
end

local ESCAPES = { ['"'] = '"', ["\\"] = "\\", ["/"] = "/", b = "\b", f = "\f", n = "\n", r = "\r", t = "\t" }

local function decode_string(text, position)
  -- position is just after the opening quote
  local start = position
  -- A long string without escapes (base64 data) is skipped with plain searches, which run at memchr
  -- speed; a character class (below) costs ~10 ns per character in Envoy's Lua.
  local quote = string.find(text, '"', position, true)
  if quote ~= nil and quote - start > SHORT_STRING then
    local backslash = string.find(text, "\\", position, true)
    if backslash == nil or backslash > quote then
      return "<long string>", quote + 1
    end
  end
  local parts = {}
  while true do
    local special = string.find(text, '["\\%c]', position)
    if special == nil then
      fail(start, "unterminated string")
    end
    local char = string.sub(text, special, special)
    if char == '"' then
      if special - start > SHORT_STRING then
        return "<long string>", special + 1
      end
      parts[#parts + 1] = string.sub(text, position, special - 1)
      return table.concat(parts), special + 1
    elseif char == "\\" then
      parts[#parts + 1] = string.sub(text, position, special - 1)
      local escape = string.sub(text, special + 1, special + 1)
      if escape == "u" then
        local hex = string.match(text, "^%x%x%x%x", special + 2)
        if hex == nil then
          fail(special, "bad \\u escape")
        end
        local code = tonumber(hex, 16)
        parts[#parts + 1] = code < 128 and string.char(code) or "?"
        position = special + 6
      elseif ESCAPES[escape] then
        parts[#parts + 1] = ESCAPES[escape]
        position = special + 2
      else
        fail(special, "bad escape")
      end
    else
      fail(special, "control character in a string")
    end
  end
end

local function decode_object(text, position, depth)
  local object = { kind = "object", fields = {}, order = {} }
  position = skip_space(text, position)
  if string.sub(text, position, position) == "}" then
    return object, position + 1
  end
  while true do
    if string.sub(text, position, position) ~= '"' then
      fail(position, "expected a field name")
    end
    local key
    key, position = decode_string(text, position + 1)
    position = skip_space(text, position)
    if string.sub(text, position, position) ~= ":" then
      fail(position, "expected ':'")
    end
    local value
    value, position = decode_value(text, skip_space(text, position + 1), depth + 1)
    if object.fields[key] == nil then
      object.order[#object.order + 1] = key
    end
    object.fields[key] = value
    position = skip_space(text, position)
    local char = string.sub(text, position, position)
    if char == "}" then
      return object, position + 1
    elseif char ~= "," then
      fail(position, "expected ',' or '}'")
    end
    position = skip_space(text, position + 1)
  end
end

local function decode_array(text, position, depth)
  local array = { kind = "array", items = {} }
  position = skip_space(text, position)
  if string.sub(text, position, position) == "]" then
    return array, position + 1
  end
  while true do
    local value
    value, position = decode_value(text, position, depth + 1)
    array.items[#array.items + 1] = value
    position = skip_space(text, position)
    local char = string.sub(text, position, position)
    if char == "]" then
      return array, position + 1
    elseif char ~= "," then
      fail(position, "expected ',' or ']'")
    end
    position = skip_space(text, position + 1)
  end
end

decode_value = function(text, position, depth)
  if depth > MAX_DEPTH then
    fail(position, "nested too deeply")
  end
  position = skip_space(text, position)
  local char = string.sub(text, position, position)
  if char == "{" then
    return decode_object(text, position + 1, depth)
  elseif char == "[" then
    return decode_array(text, position + 1, depth)
  elseif char == '"' then
    return decode_string(text, position + 1)
  elseif string.sub(text, position, position + 3) == "true" then
    return true, position + 4
  elseif string.sub(text, position, position + 4) == "false" then
    return false, position + 5
  elseif string.sub(text, position, position + 3) == "null" then
    return NULL, position + 4
  end
  local number = string.match(text, "^-?%d+%.?%d*[eE]?[-+]?%d*", position)
  if number == nil or tonumber(number) == nil then
    fail(position, "unexpected character")
  end
  return tonumber(number), position + #number
end

local function decode(text)
  local value, position = decode_value(text, 1, 0)
  position = skip_space(text, position)
  if position <= #text then
    fail(position, "text after the value")
  end
  return value
end

-- Checking against the schema ----------------------------------------------------------------------------

local SCHEMA = decode(SCHEMA_JSON)

local function plain(value)
  -- SCHEMA's own decoded objects, as Lua tables
  if type(value) ~= "table" or value == NULL then
    return value
  end
  local result = {}
  if value.kind == "array" then
    for index, item in ipairs(value.items) do
      result[index] = plain(item)
    end
  else
    for key, item in pairs(value.fields) do
      result[key] = plain(item)
    end
  end
  return result
end
SCHEMA = plain(SCHEMA)

local function shown(value)
  if type(value) == "string" then
    return '"' .. value .. '"'
  elseif type(value) == "table" then
    return value == NULL and "null" or (value.kind == "array" and "a list" or "an object")
  end
  return tostring(value)
end

local function distance(a, b)
  -- edits (insert, delete, replace, swap two neighbours) from a to b
  if math.abs(#a - #b) > 3 then
    return 99
  end
  local before, previous = nil, {}
  for j = 0, #b do
    previous[j] = j
  end
  for i = 1, #a do
    local current = { [0] = i }
    for j = 1, #b do
      local cost = string.sub(a, i, i) == string.sub(b, j, j) and 0 or 1
      current[j] = math.min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + cost)
      if before and i > 1 and j > 1 and string.sub(a, i, i) == string.sub(b, j - 1, j - 1)
          and string.sub(a, i - 1, i - 1) == string.sub(b, j, j) then
        current[j] = math.min(current[j], before[j - 2] + 1)
      end
    end
    before, previous = previous, current
  end
  return previous[#b]
end

local function near_miss(key, fields)
  local lowered = string.lower(key)
  local best, best_score = nil, 99
  for name, field in pairs(fields) do
    if name == field.name then -- proto names only: the suggestion uses the API's spelling
      local score = distance(lowered, name)
      if #lowered >= 3 and (string.find(name, lowered, 1, true) or string.find(lowered, name, 1, true)) then
        score = math.min(score, 1)
      end
      if score < best_score or (score == best_score and best ~= nil and name < best) then
        best, best_score = name, score
      end
    end
  end
  if best ~= nil and best_score <= math.max(1, math.floor(#key / 3)) then
    return best
  end
  return nil
end

local check_message

local function check_scalar(value, field, path)
  local kind = field.kind
  if value == NULL or kind == "any" then
    return nil
  elseif kind == "bool" then
    if type(value) ~= "boolean" then
      return path .. ": must be true or false (got " .. shown(value) .. ")"
    end
  elseif kind == "number" then
    if type(value) ~= "number" and not (type(value) == "string" and tonumber(value) ~= nil) then
      return path .. ": must be a number (got " .. shown(value) .. ")"
    end
  elseif kind == "string" then
    if type(value) ~= "string" then
      return path .. ": must be a string (got " .. shown(value) .. ")"
    end
  elseif kind == "enum" then
    if type(value) == "string" then
      for _, name in ipairs(field.values) do
        if name == value then
          return nil
        end
      end
      return path .. ": must be one of " .. table.concat(field.values, ", ") .. " (got " .. shown(value) .. ")"
    elseif type(value) ~= "number" then
      return path .. ": must be one of " .. table.concat(field.values, ", ") .. " (got " .. shown(value) .. ")"
    end
  elseif kind == "object" or kind == "message" then
    if type(value) ~= "table" or value.kind ~= "object" then
      return path .. ": must be an object (got " .. shown(value) .. ")"
    end
    if kind == "message" then
      return check_message(value, field.message, path .. ".")
    end
  elseif kind == "array" then
    if type(value) ~= "table" or value.kind ~= "array" then
      return path .. ": must be a list (got " .. shown(value) .. ")"
    end
  end
  return nil
end

check_message = function(object, message_name, prefix)
  local fields = SCHEMA.messages[message_name].fields
  local oneofs = {}
  for _, key in ipairs(object.order) do
    local value = object.fields[key]
    local field = fields[key]
    local path = prefix .. key
    if field == nil then
      local meant = near_miss(key, fields)
      if meant ~= nil then
        return path .. ": no such field (did you mean " .. prefix .. meant .. "?)"
      end
      return path .. ": no such field"
    end
    path = prefix .. field.name
    if field.oneof ~= nil and value ~= NULL then
      local other = oneofs[field.oneof]
      if other ~= nil and other ~= field.name then
        return prefix .. other .. " and " .. path .. ": set only one of them (they are alternatives)"
      end
      oneofs[field.oneof] = field.name
    end
    if value ~= NULL then
      local problem
      if field.repeated then
        if type(value) ~= "table" or value.kind ~= "array" then
          return path .. ": must be a list (got " .. shown(value) .. ")"
        end
        for index, item in ipairs(value.items) do
          problem = check_scalar(item, field, path .. "[" .. (index - 1) .. "]")
          if problem then
            return problem
          end
        end
      elseif field.map then
        if type(value) ~= "table" or value.kind ~= "object" then
          return path .. ": must be an object (got " .. shown(value) .. ")"
        end
        for _, name in ipairs(value.order) do
          problem = check_scalar(value.fields[name], field, path .. "[" .. name .. "]")
          if problem then
            return problem
          end
        end
      else
        problem = check_scalar(value, field, path)
        if problem then
          return problem
        end
      end
    end
  end
  return nil
end

local function unescape(text)
  text = string.gsub(text, "+", " ")
  return (string.gsub(text, "%%(%x%x)", function(hex)
    return string.char(tonumber(hex, 16))
  end))
end

-- A query parameter names a field of the request message, nested ones with dots ("sampling.seed").
local function query_problem(query, message_name)
  for pair in string.gmatch(query, "[^&]+") do
    local name = unescape(string.match(pair, "^[^=]*"))
    local fields = SCHEMA.messages[message_name].fields
    local path = ""
    for segment in string.gmatch(name, "[^.]+") do
      local field = fields and fields[segment]
      if field == nil then
        local meant = fields and near_miss(segment, fields)
        local hint = meant and " (did you mean " .. path .. meant .. "?)" or ""
        return "query parameter " .. path .. segment .. ": no such field" .. hint
      end
      path = path .. field.name .. "."
      fields = field.kind == "message" and SCHEMA.messages[field.message].fields or nil
    end
  end
  return nil
end

local function route_for(method, path)
  for _, route in ipairs(SCHEMA.routes) do
    if route.method == method and string.find(path, route.pattern) then
      return route
    end
  end
  return nil
end

local function problem_with(text, route)
  local ok, body = pcall(decode, text)
  if not ok then
    if type(body) == "table" and body.json then
      return body.message
    end
    error(body)
  end
  if type(body) ~= "table" or body.kind ~= "object" then
    return "request body: must be a JSON object (got " .. shown(body) .. ")"
  end
  return check_message(body, route.body, route.prefix)
end

function envoy_on_request(handle)
  local headers = handle:headers()
  local content_type = headers:get("content-type") or ""
  if string.find(content_type, "^application/grpc") then
    return -- gRPC callers send protobuf: nothing to check
  end
  local path, query = string.match(headers:get(":path") or "", "^([^?]*)%??(.*)$")
  local route = route_for(headers:get(":method"), path)
  if route == nil then
    return -- not a transcoded route: the router answers it
  end
  local problem = query ~= "" and query_problem(query, route.request) or nil
  if problem == nil and route.body ~= "" then
    local body = handle:body()
    if body ~= nil and body:length() > 0 then
      problem = problem_with(body:getBytes(0, body:length()), route)
    end
  end
  if problem ~= nil then
    handle:respond({ [":status"] = "400", ["content-type"] = "text/plain" }, problem)
  end
end
