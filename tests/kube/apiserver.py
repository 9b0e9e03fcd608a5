#!/usr/bin/env python3
"""A Kubernetes API server stand-in for che-backup's tests, built on kmock 0.8 (PyPI).

    python3 tests/kube/apiserver.py --port PORT [--host 127.0.0.1] [--token T] [--tls-dir DIR]
        [--state FILE] [--kubeconfig OUT] [--namespace NS] [--pid-file F]
        [--bookmark-interval SECONDS] [--history EVENTS]

When ready it prints one line ``apiserver: listening on http(s)://HOST:PORT`` (``--port 0`` picks
a free port and prints it). SIGTERM/SIGINT stop it cleanly.

What comes from kmock: the HTTP server (``kmock.Server`` on aiohttp), the request records
(``kmock.Request`` in the handler's request list), the object store with per-object history
(``KubernetesEmulator.objects``), the resource registry (``.resources``) and the discovery routes of
``KubernetesScaffold`` (their ``_serve_*`` methods are overridden here to be correct).

What this fixture adds, from the Kubernetes API conventions, because kmock 0.8 lacks it:
  * its own URL parser (kmock's raises on ``/api/v1/namespaces`` and reads ``/namespaces/x`` as a
    namespace, not an object) and its own create/replace/patch/delete (kmock merges every write
    into the object, ``/status`` included, and has no PUT);
  * discovery with correct core ``groupVersion: v1``, verbs, short names, subresources;
  * a global integer ``resourceVersion``; uid, creationTimestamp, generation (+1 on a change outside
    metadata/status), 201 on create, 409 AlreadyExists, generateName, namespace must exist;
  * PUT; merge, strategic-merge (approximate: lists of named items merged by name, ``$`` directives
    honoured or dropped; refused with 415 for custom resources, as the real server does),
    JSON-patch and apply-patch (as a merge); a stale ``metadata.resourceVersion`` gives 409 Conflict;
  * the status subresource: main writes keep status, ``/status`` writes change only status;
  * ``deployments|statefulsets/{name}/scale`` (autoscaling/v1 Scale);
  * finalizers: DELETE sets deletionTimestamp; the object goes when the last finalizer is removed;
  * lists with ``kind: XList``, current resourceVersion, label and field selectors, limit/continue;
  * watches: events after the given resourceVersion only, bounded history, ERROR 410 Expired for a
    resourceVersion older than it (sent as an event on a 200 stream, as the real server does),
    BOOKMARKs, timeoutSeconds, selectors (an object that stops matching is sent as DELETED);
  * bearer-token auth, TLS with a generated CA, a kubeconfig, a JSON state file that survives
    restarts (watch history does not), and fault injection under ``/_fault`` and ``/_requests``.
JSON (and YAML) bodies only: protobuf bodies get 415, so kubectl's typed ``create configmap|secret``
fails; use ``kubectl create ... --dry-run=client -o yaml | kubectl apply -f -`` instead.

What it cannot prove (test against a real cluster for these): the real watch cache's timing and
ordering across resources, CRD schema validation, defaulting and pruning (objects are stored as
sent; only ``spec.replicas`` of Deployments/StatefulSets defaults to 1), admission webhooks being
called, RBAC, garbage collection (ownerReferences and namespace deletion remove nothing), rollouts
and every other controller: nothing sets Deployment status or runs pods — the tests play those parts.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import copy
import dataclasses
import datetime
import hmac
import ipaddress
import json
import os
import random
import re
import signal
import ssl
import traceback
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiohttp.test_utils
import aiohttp.web
import attrs
import kmock
from kmock._internal import rendering

JSON = dict[str, Any]
CHE = 'org.eclipse.che'
MAX_BODY = 3 * 1024 * 1024         # the real server's request body limit
MAX_DATA = 1024 * 1024             # Secret/ConfigMap data limit
VERBS = ['create', 'delete', 'deletecollection', 'get', 'list', 'patch', 'update', 'watch']
VERSIONS_PER_OBJECT = 20           # kmock keeps every version of an object; keep the last few
REASONS = {400: 'BadRequest', 401: 'Unauthorized', 403: 'Forbidden', 404: 'NotFound',
           405: 'MethodNotAllowed', 409: 'Conflict', 410: 'Expired', 413: 'RequestEntityTooLarge',
           415: 'UnsupportedMediaType', 422: 'Invalid', 429: 'TooManyRequests', 500: 'InternalError',
           503: 'ServiceUnavailable', 504: 'Timeout'}


# --- resources --------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Kind:
    """One served resource (group/version/plural) and what discovery says about it."""
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True
    short: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ()       # 'status', 'scale'
    categories: tuple[str, ...] = ()
    custom: bool = False                     # a custom resource (no strategic merge; generation always)

    @property
    def gv(self) -> str:
        return f'{self.group}/{self.version}' if self.group else self.version

    @property
    def ref(self) -> kmock.resource:
        return kmock.resource(self.group, self.version, self.plural)

    @property
    def qualified(self) -> str:               # as in messages: 'deployments.apps', 'secrets'
        return f'{self.plural}.{self.group}' if self.group else self.plural


def builtin_kinds() -> list[Kind]:
    s, sc, cb, a = ('status',), ('status', 'scale'), ('che-backup',), ('all',)
    return [
        Kind('', 'v1', 'namespaces', 'Namespace', False, ('ns',), s),
        Kind('', 'v1', 'secrets', 'Secret'),
        Kind('', 'v1', 'configmaps', 'ConfigMap', short=('cm',)),
        Kind('', 'v1', 'pods', 'Pod', short=('po',), subresources=s, categories=a),
        Kind('', 'v1', 'services', 'Service', short=('svc',), subresources=s, categories=a),
        Kind('', 'v1', 'events', 'Event', short=('ev',)),
        Kind('', 'v1', 'persistentvolumeclaims', 'PersistentVolumeClaim', short=('pvc',), subresources=s),
        Kind('', 'v1', 'serviceaccounts', 'ServiceAccount', short=('sa',)),
        Kind('apps', 'v1', 'deployments', 'Deployment', short=('deploy',), subresources=sc, categories=a),
        Kind('apps', 'v1', 'statefulsets', 'StatefulSet', short=('sts',), subresources=sc, categories=a),
        Kind('coordination.k8s.io', 'v1', 'leases', 'Lease'),
        Kind('batch', 'v1', 'jobs', 'Job', subresources=s, categories=a),
        Kind('batch', 'v1', 'cronjobs', 'CronJob', short=('cj',), subresources=s, categories=a),
        Kind('events.k8s.io', 'v1', 'events', 'Event', short=('ev',)),
        Kind('admissionregistration.k8s.io', 'v1', 'mutatingwebhookconfigurations',
             'MutatingWebhookConfiguration', False),
        Kind('admissionregistration.k8s.io', 'v1', 'validatingwebhookconfigurations',
             'ValidatingWebhookConfiguration', False),
        Kind('apiextensions.k8s.io', 'v1', 'customresourcedefinitions', 'CustomResourceDefinition',
             False, ('crd', 'crds'), s),
        Kind(CHE, 'v1', 'chebackupserverconfigurations', 'CheBackupServerConfiguration',
             short=('cbsc',), subresources=s, categories=cb, custom=True),
        Kind(CHE, 'v1', 'checlusterbackups', 'CheClusterBackup', short=('chebackup',),
             subresources=s, categories=cb, custom=True),
        Kind(CHE, 'v1', 'checlusterrestores', 'CheClusterRestore', short=('cherestore',),
             subresources=s, categories=cb, custom=True),
        Kind(CHE, 'v1', 'checlusterbackupschedules', 'CheClusterBackupSchedule',
             short=('chebackupschedule',), subresources=s, categories=cb, custom=True),
        Kind(CHE, 'v2', 'checlusters', 'CheCluster', subresources=s, custom=True),
    ]


def kinds_from_crd(crd: JSON) -> list[Kind]:
    """The resources a CustomResourceDefinition declares (so new CRDs become discoverable)."""
    spec, names = crd.get('spec') or {}, (crd.get('spec') or {}).get('names') or {}
    out = []
    for v in spec.get('versions') or []:
        if v.get('served', True) and names.get('plural') and names.get('kind') and spec.get('group'):
            out.append(Kind(spec['group'], v['name'], names['plural'], names['kind'],
                            spec.get('scope', 'Namespaced') == 'Namespaced',
                            tuple(names.get('shortNames') or ()),
                            ('status',) if 'status' in (v.get('subresources') or {}) else (),
                            tuple(names.get('categories') or ()), True))
    return out


# Field selectors the real server supports beyond metadata.name/metadata.namespace.
FIELDS: dict[str, set[str]] = {
    'pods': {'status.phase', 'spec.nodeName', 'spec.restartPolicy', 'spec.schedulerName',
             'spec.serviceAccountName', 'status.podIP', 'status.nominatedNodeName'},
    'namespaces': {'status.phase'},
    'secrets': {'type'},
    'jobs': {'status.successful'},
    'events': {'involvedObject.kind', 'involvedObject.namespace', 'involvedObject.name',
               'involvedObject.uid', 'involvedObject.apiVersion', 'involvedObject.fieldPath',
               'reason', 'reportingComponent', 'source', 'type'},
}
INITIAL_STATUS = {'pods': {'phase': 'Pending'}, 'persistentvolumeclaims': {'phase': 'Pending'},
                  'namespaces': {'phase': 'Active'}}


# --- errors -----------------------------------------------------------------------------------

class ApiError(Exception):
    """An error answered as a Kubernetes Status object."""

    def __init__(self, code: int, message: str, reason: str | None = None, details: JSON | None = None):
        super().__init__(message)
        self.code, self.message = code, message
        self.reason = reason or REASONS.get(code, 'InternalError')
        self.details = details

    def status(self) -> JSON:
        out = {'kind': 'Status', 'apiVersion': 'v1', 'metadata': {}, 'status': 'Failure',
               'message': self.message, 'reason': self.reason, 'code': self.code}
        if self.details:
            out['details'] = self.details
        return out


def _details(kind: Kind, name: str) -> JSON:
    return {'name': name, 'group': kind.group, 'kind': kind.plural}


def not_found(kind: Kind, name: str) -> ApiError:
    return ApiError(404, f'{kind.qualified} "{name}" not found', details=_details(kind, name))


def conflict(kind: Kind, name: str) -> ApiError:
    return ApiError(409, f'Operation cannot be fulfilled on {kind.qualified} "{name}": the object has '
                         'been modified; please apply your changes to the latest version and try again',
                    details=_details(kind, name))


def expired(rv: int, oldest: int) -> ApiError:
    return ApiError(410, f'too old resource version: {rv} ({oldest})', 'Expired')


# --- selectors --------------------------------------------------------------------------------

LabelReq = tuple[str, str, tuple[str, ...]]          # (key, op, values)


def _split_top(text: str) -> list[str]:
    """Split at commas that are not inside parentheses."""
    parts, depth, cur = [], 0, ''
    for ch in text:
        depth += (ch == '(') - (ch == ')')
        if ch == ',' and depth == 0:
            parts.append(cur)
            cur = ''
        else:
            cur += ch
    return [p.strip() for p in parts + [cur] if p.strip()]


def parse_label_selector(text: str) -> list[LabelReq]:
    reqs: list[LabelReq] = []
    for term in _split_top(text):
        if m := re.fullmatch(r'([^\s!=(),]+)\s+(in|notin)\s+\(([^()]*)\)', term):
            reqs.append((m[1], m[2], tuple(v.strip() for v in m[3].split(',') if v.strip())))
        elif m := re.fullmatch(r'!\s*([^\s!=(),]+)', term):
            reqs.append((m[1], '!', ()))
        elif m := re.fullmatch(r'([^\s!=(),]+)\s*(==|=|!=)\s*([^\s!=(),]*)', term):
            reqs.append((m[1], '!=' if m[2] == '!=' else '=', (m[3],)))
        elif re.fullmatch(r'[^\s!=(),]+', term):
            reqs.append((term, 'exists', ()))
        else:
            raise ApiError(400, f'unable to parse requirement: {term!r}')
    return reqs


def labels_match(reqs: list[LabelReq], labels: Mapping[str, str]) -> bool:
    for key, op, values in reqs:
        present = key in labels
        if op == 'exists' or op == '!':
            ok = present == (op == 'exists')
        elif op in ('=', 'in'):
            ok = present and labels[key] in values
        else:                                            # '!=', 'notin': absent keys match
            ok = labels.get(key) not in values
        if not ok:
            return False
    return True


def parse_field_selector(text: str, kind: Kind) -> list[tuple[str, bool, str]]:
    out = []
    for term in _split_top(text):
        m = re.fullmatch(r'([^=!\s]+)\s*(==|=|!=)\s*(.*)', term)
        if not m:
            raise ApiError(400, f'invalid selector: {term!r}; can\'t understand it')
        if m[1] not in {'metadata.name', 'metadata.namespace'} | FIELDS.get(kind.plural, set()):
            raise ApiError(400, f'field label not supported: {m[1]}')
        out.append((m[1], m[2] != '!=', m[3]))
    return out


def fields_match(reqs: list[tuple[str, bool, str]], obj: JSON) -> bool:
    for path, equal, want in reqs:
        value: Any = obj
        for part in path.split('.'):
            value = value.get(part) if isinstance(value, dict) else None
        if ((str(value) if value is not None else '') == want) != equal:
            return False
    return True


# --- patches ----------------------------------------------------------------------------------

def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _strip_directives(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_directives(v) for k, v in value.items() if not k.startswith('$')}
    if isinstance(value, list):
        return [_strip_directives(v) for v in value]
    return value


def _named_list(items: Any) -> bool:
    return isinstance(items, list) and bool(items) and all(isinstance(i, dict) and 'name' in i for i in items)


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    """An approximation of strategic merge: lists whose items all have a ``name`` merge by name."""
    if not isinstance(patch, dict):
        return _strip_directives(patch)
    if patch.get('$patch') == 'replace':
        return _strip_directives(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith('$deleteFromPrimitiveList/'):
            field = key.split('/', 1)[1]
            result[field] = [v for v in result.get(field) or [] if v not in value]
        elif key.startswith('$'):
            continue                                   # $setElementOrder/…, $retainKeys, $patch
        elif value is None or (isinstance(value, dict) and value.get('$patch') == 'delete'):
            result.pop(key, None)
        elif _named_list(value) and _named_list(result.get(key)):
            merged = {item['name']: item for item in result[key]}
            for item in value:
                if item.get('$patch') == 'delete':
                    merged.pop(item['name'], None)
                else:
                    merged[item['name']] = strategic_merge_patch(merged.get(item['name']), item)
            result[key] = list(merged.values())
        else:
            result[key] = strategic_merge_patch(result.get(key), value)
    return result


def json_patch(doc: Any, ops: Any) -> Any:
    """RFC 6902 JSON patch."""
    if not isinstance(ops, list):
        raise ApiError(400, 'a JSON patch must be a list of operations')
    doc = copy.deepcopy(doc)

    def walk(pointer: str) -> tuple[Any, str]:
        if not pointer.startswith('/'):
            raise ApiError(422, f'invalid JSON pointer {pointer!r}')
        parts = [p.replace('~1', '/').replace('~0', '~') for p in pointer[1:].split('/')]
        node = doc
        for part in parts[:-1]:
            try:
                node = node[int(part)] if isinstance(node, list) else node[part]
            except (KeyError, IndexError, ValueError, TypeError):
                raise ApiError(422, f'doc is missing path: "{pointer}"')
        return node, parts[-1]

    def get(pointer: str) -> Any:
        node, key = walk(pointer)
        try:
            return node[int(key)] if isinstance(node, list) else node[key]
        except (KeyError, IndexError, ValueError, TypeError):
            raise ApiError(422, f'doc is missing key: "{pointer}"')

    def remove(pointer: str) -> Any:
        value = get(pointer)
        node, key = walk(pointer)
        del node[int(key) if isinstance(node, list) else key]
        return value

    def add(pointer: str, value: Any) -> None:
        node, key = walk(pointer)
        if isinstance(node, list):
            node.insert(len(node) if key == '-' else int(key), value)
        elif isinstance(node, dict):
            node[key] = value
        else:
            raise ApiError(422, f'doc is missing path: "{pointer}"')

    for op in ops:
        kind, path = op.get('op'), op.get('path', '')
        if kind == 'add':
            add(path, copy.deepcopy(op.get('value')))
        elif kind == 'remove':
            remove(path)
        elif kind == 'replace':
            remove(path)
            add(path, copy.deepcopy(op.get('value')))
        elif kind == 'move':
            add(path, remove(op['from']))
        elif kind == 'copy':
            add(path, copy.deepcopy(get(op['from'])))
        elif kind == 'test':
            if get(path) != op.get('value'):
                raise ApiError(422, f'testing value {path} failed')
        else:
            raise ApiError(422, f'unexpected JSON patch operation {kind!r}')
    return doc


# --- the server -------------------------------------------------------------------------------

@dataclasses.dataclass
class Event:
    rv: int
    type: str                  # ADDED | MODIFIED | DELETED
    kind: Kind
    obj: JSON
    old: JSON | None           # the previous state, for selector transitions


@dataclasses.dataclass
class Call:
    """One API request, parsed (kmock's parser cannot handle /api/v1/namespaces)."""
    raw: aiohttp.web.BaseRequest
    method: str
    params: Mapping[str, str]
    body: bytes
    content_type: str
    group: str | None = None
    version: str | None = None
    namespace: str | None = None
    plural: str | None = None
    name: str | None = None
    sub: str | None = None

    @classmethod
    def parse(cls, raw: aiohttp.web.BaseRequest, body: bytes) -> 'Call':
        call = cls(raw, raw.method.upper(), raw.query, body, raw.content_type)
        parts = [p for p in raw.path.split('/') if p]
        if parts[:1] == ['api'] and len(parts) >= 2:
            call.group, call.version, rest = '', parts[1], parts[2:]
        elif parts[:1] == ['apis'] and len(parts) >= 2:
            call.group, call.version, rest = parts[1], (parts[2:] or [None])[0], parts[3:]
        else:
            return call
        if rest[:1] == ['namespaces'] and len(rest) >= 3 and not (len(rest) == 3 and rest[2] in ('status', 'finalize')):
            call.namespace, rest = rest[1], rest[2:]
        if rest:
            call.plural = rest[0]
            call.name = rest[1] if len(rest) > 1 else None
            call.sub = '/'.join(rest[2:]) or None
        return call

    def data(self) -> Any:
        if not self.body:
            return None
        if 'protobuf' in self.content_type or 'cbor' in self.content_type:
            raise ApiError(415, f'the body of the request was in an unknown format ({self.content_type}); '
                                'this server speaks JSON only')
        try:
            if self.content_type in ('application/apply-patch+yaml', 'application/yaml'):
                import yaml
                return yaml.safe_load(self.body)
            return json.loads(self.body)
        except Exception as e:
            raise ApiError(400, f'the request body could not be decoded: {e}')

    def object(self) -> JSON:
        data = self.data()
        if not isinstance(data, dict):
            raise ApiError(400, 'the request body must be a JSON object')
        data.setdefault('metadata', {})
        if not isinstance(data['metadata'], dict):
            raise ApiError(400, 'metadata must be an object')
        return data


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ')


def json_response(obj: Any, code: int = 200) -> aiohttp.web.Response:
    return aiohttp.web.Response(body=json.dumps(obj).encode(), status=code, content_type='application/json')


@attrs.define(kw_only=True)
class ApiServer(kmock.KubernetesEmulator):
    """kmock's Kubernetes emulator with the API conventions filled in (see the module docstring)."""
    token: str | None = None
    state_path: Path | None = None
    bookmark_interval: float = 2.0
    history_size: int = 1000
    rv: int = 0
    horizon: int = 0                                  # watches from older resourceVersions get 410
    kinds: dict[tuple[str, str, str], Kind] = attrs.field(factory=dict)
    events: collections.deque[Event] = attrs.field(factory=collections.deque)
    changed: asyncio.Event = attrs.field(factory=asyncio.Event)
    watches: set[asyncio.BaseTransport] = attrs.field(factory=set)
    conflicts: dict[str, int] = attrs.field(factory=dict)
    failures: list[tuple[int, str | None]] = attrs.field(factory=list)   # (code, plural) per request
    log: list[JSON] = attrs.field(factory=list)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        for kind in builtin_kinds():
            self.add_kind(kind)

    def add_kind(self, kind: Kind) -> None:
        key = (kind.group, kind.version, kind.plural)
        if key not in self.kinds:
            self.kinds[key] = kind
            self.resources[kind.ref] = kmock.ResourceInfo(
                namespaced=kind.namespaced, kind=kind.kind, singular=kind.kind.lower(), verbs=VERBS,
                shortnames=kind.short, categories=kind.categories, subresources=kind.subresources)

    # --- entry point: replaces kmock's, whose URL parser fails on namespaces -------------------

    async def __call__(self, raw: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        body = await raw.read()
        call = Call.parse(raw, body)
        request = kmock.Request(  # recorded as kmock does, so kmock's views and routes see it
            id=len(self._requests), method=raw.method, url=raw.url, params=dict(raw.query),
            headers=dict(raw.headers), body=body, text=body.decode('utf-8', 'replace'),
            resource=None if call.group is None else kmock.resource(
                group=call.group, version=call.version, plural=call.plural),
            namespace=call.namespace, name=call.name, subresource=call.sub, raw_request=raw)
        self._requests.append(request)
        del self._requests[:-1000]
        hooks = raw.path in ('/healthz', '/livez', '/readyz') or raw.path.startswith(('/_fault/', '/_requests'))
        try:
            response = await (self._serve_hook(call) if hooks else self._dispatch(call, request))
        except Exception as e:     # ApiError, kmock's KubernetesError, bugs: all become a Status
            response = await self._render_error(e)
        if not hooks:
            self._log(call, response.status)
        return response

    def _log(self, call: Call, code: int) -> None:
        entry: JSON = {'method': call.method, 'path': call.raw.path_qs, 'contentType': call.content_type, 'code': code}
        try:
            body = json.loads(call.body) if call.body else None
        except ValueError:
            body = None
        if isinstance(body, dict):
            entry['resourceVersion'] = (body.get('metadata') or {}).get('resourceVersion')
        if body is not None:
            entry['body'] = body
        self.log.append(entry)
        del self.log[:-10000]

    async def _dispatch(self, call: Call, request: kmock.Request) -> aiohttp.web.StreamResponse:
        if self.token is not None:
            auth = call.raw.headers.get('Authorization', '')
            if not hmac.compare_digest(auth.encode(), f'Bearer {self.token}'.encode()):
                raise ApiError(401, 'Unauthorized')
        if len(call.body) > MAX_BODY:
            raise ApiError(413, f'Request entity too large: limit is {MAX_BODY}')
        for i, (code, plural) in enumerate(self.failures):
            if call.raw.path.startswith(('/api/', '/apis/')) and plural in (None, call.plural):
                del self.failures[i]
                raise ApiError(code, f'injected failure ({code})')
        if call.plural is None:       # discovery and the rest: kmock's scaffold routes
            return await kmock.RawHandler._handle(self, request)
        kind = self.kinds.get((call.group or '', call.version or '', call.plural))
        if kind is None:
            raise ApiError(404, 'the server could not find the requested resource')
        if kind.namespaced is False and call.namespace:
            raise ApiError(404, 'the server could not find the requested resource')
        return await self._serve_resource(kind, call)

    async def _render_error(self, exc: Exception) -> aiohttp.web.StreamResponse:
        if isinstance(exc, ApiError):
            return json_response(exc.status(), exc.code)
        code = exc.status if isinstance(exc, kmock.KubernetesError) else 500
        if code == 500:
            traceback.print_exception(exc)
        message = 'the server could not find the requested resource' if code == 404 else repr(exc)
        return json_response(ApiError(code, message).status(), code)

    async def _serve_resource(self, kind: Kind, call: Call) -> aiohttp.web.StreamResponse:
        m, name, sub = call.method, call.name, call.sub
        if sub not in (None, *kind.subresources):
            raise ApiError(404, 'the server could not find the requested resource')
        if m == 'GET' and call.params.get('watch') in ('true', '1'):
            return await self._watch(kind, call)
        if m in ('PUT', 'PATCH') and name is not None and self.conflicts.get(kind.plural, 0) > 0:
            self.conflicts[kind.plural] -= 1
            raise conflict(kind, name)
        ns = call.namespace if kind.namespaced else None
        if name is None:
            if m == 'GET':
                return json_response(self._list(kind, call))
            if m == 'POST':
                return json_response(self._create(kind, call), 201)
            if m == 'DELETE':
                return json_response(self._delete_collection(kind, call))
        elif sub == 'scale':
            if m == 'GET':
                return json_response(self._scale_of(self._need(kind, ns, name)))
            if m in ('PUT', 'PATCH'):
                return json_response(self._scale(kind, call, ns, name))
        elif m == 'GET':
            return json_response(self._need(kind, ns, name))
        elif m == 'PUT':
            return json_response(self._replace(kind, call, ns, name))
        elif m == 'PATCH':
            return json_response(*self._patch(kind, call, ns, name))
        elif m == 'DELETE' and sub is None:
            return json_response(self._delete(kind, call, ns, name))
        raise ApiError(405, f'the server does not allow this method on the requested resource')

    # --- the store (kmock's ObjectsArray; every write goes through _commit) ---------------------

    def _get(self, kind: Kind, ns: str | None, name: str) -> JSON | None:
        key = (kind.ref, ns, name)
        if key not in self.objects or self.objects[key].deleted:
            return None
        return copy.deepcopy(self.objects[key].raw)

    def _need(self, kind: Kind, ns: str | None, name: str) -> JSON:
        obj = self._get(kind, ns, name)
        if obj is None:
            raise not_found(kind, name)
        return obj

    def _select(self, kind: Kind, ns: str | None, params: Mapping[str, str]) -> list[JSON]:
        labels = parse_label_selector(params.get('labelSelector', ''))
        fields = parse_field_selector(params.get('fieldSelector', ''), kind)
        out = []
        for (ref, ons, _), obj in self.objects.items():
            if ref == kind.ref and not obj.deleted and (ns is None or ons == ns):
                raw = obj.raw
                if labels_match(labels, raw['metadata'].get('labels') or {}) and fields_match(fields, raw):
                    out.append(copy.deepcopy(raw))
        return sorted(out, key=lambda o: (o['metadata'].get('namespace') or '', o['metadata']['name']))

    def _commit(self, kind: Kind, type_: str, obj: JSON, old: JSON | None) -> JSON:
        self.rv += 1
        meta = obj['metadata']
        meta['resourceVersion'] = str(self.rv)
        key = (kind.ref, meta.get('namespace'), meta['name'])
        if type_ == 'DELETED':
            self.objects[key].delete()
        elif key not in self.objects:
            self.objects[key] = copy.deepcopy(obj)
        else:
            self.objects[key].create(copy.deepcopy(obj))
            del self.objects[key].history[:-VERSIONS_PER_OBJECT]
        self.events.append(Event(self.rv, type_, kind, copy.deepcopy(obj), old))
        while len(self.events) > self.history_size:
            self.horizon = max(self.horizon, self.events.popleft().rv)
        if kind.plural == 'customresourcedefinitions' and type_ != 'DELETED':
            for k in kinds_from_crd(obj):
                self.add_kind(k)
        self.changed.set()
        self.changed = asyncio.Event()
        self.save_state()
        return obj

    # --- verbs ----------------------------------------------------------------------------------

    def _list(self, kind: Kind, call: Call) -> JSON:
        items = self._select(kind, call.namespace, call.params)
        meta: JSON = {'resourceVersion': str(self.rv)}
        if token := call.params.get('continue'):
            try:
                after = tuple(json.loads(base64.b64decode(token)))
            except Exception:
                raise ApiError(400, 'invalid continue token')
            items = [o for o in items if (o['metadata'].get('namespace') or '', o['metadata']['name']) > after]
        limit = int(call.params.get('limit') or 0)
        if 0 < limit < len(items):
            last = items[limit - 1]['metadata']
            meta['continue'] = base64.b64encode(json.dumps([last.get('namespace') or '', last['name']]).encode()).decode()
            meta['remainingItemCount'] = len(items) - limit
            items = items[:limit]
        if not kind.custom:   # the real server leaves kind/apiVersion out of built-in list items
            for o in items:
                o.pop('kind', None), o.pop('apiVersion', None)
        return {'kind': f'{kind.kind}List', 'apiVersion': kind.gv, 'metadata': meta, 'items': items}

    def _check_identity(self, kind: Kind, call: Call, obj: JSON, name: str | None) -> str | None:
        """Check kind/apiVersion/namespace/name of a body against the URL; return its namespace."""
        if obj.get('kind', kind.kind) != kind.kind or obj.get('apiVersion', kind.gv) != kind.gv:
            raise ApiError(400, f'the API version in the data ({obj.get("apiVersion")}) and kind '
                                f'({obj.get("kind")}) do not match {kind.gv} {kind.kind}')
        obj['kind'], obj['apiVersion'] = kind.kind, kind.gv
        meta = obj['metadata']
        if not kind.namespaced:
            meta.pop('namespace', None)
            ns = None
        else:
            ns = call.namespace or meta.get('namespace') or 'default'
            if meta.get('namespace', ns) != ns:
                raise ApiError(400, 'the namespace of the provided object does not match the namespace sent on the request')
            meta['namespace'] = ns
        if name is not None and meta.setdefault('name', name) != name:
            raise ApiError(400, f'the name of the object ({meta["name"]}) does not match the name on the URL ({name})')
        return ns

    def _validate(self, kind: Kind, obj: JSON) -> None:
        name = obj['metadata'].get('name') or ''
        if len(name) > 253 or not re.fullmatch(r'[a-z0-9]([-a-z0-9.]*[a-z0-9])?', name):
            raise ApiError(422, f'{kind.kind} "{name}" is invalid: metadata.name: Invalid value: "{name}": '
                                'a lowercase RFC 1123 subdomain must consist of lower case alphanumeric '
                                "characters, '-' or '.'", details=_details(kind, name))
        if kind.plural in ('secrets', 'configmaps'):
            for f in ('data', 'stringData', 'binaryData'):
                if not isinstance(obj.get(f) or {}, dict) or not all(
                        isinstance(v, str) for v in (obj.get(f) or {}).values()):
                    raise ApiError(400, f'{kind.kind} in version "v1" cannot be handled as a {kind.kind}: '
                                        f'{f} values must be strings')
            size = sum(len(k) + len(str(v)) * (3 if kind.plural == 'secrets' else 4) // 4
                       for f in ('data', 'stringData', 'binaryData') for k, v in (obj.get(f) or {}).items())
            if size > MAX_DATA:
                raise ApiError(422, f'{kind.kind} "{name}" is invalid: data: Too long: must have at most '
                                    f'{MAX_DATA} bytes', details=_details(kind, name))

    def _create(self, kind: Kind, call: Call, obj: JSON | None = None) -> JSON:
        obj = call.object() if obj is None else obj
        ns = self._check_identity(kind, call, obj, None)
        meta = obj['metadata']
        if not meta.get('name'):
            if not meta.get('generateName'):
                raise ApiError(422, f'{kind.kind} "" is invalid: metadata.name: Required value: name or generateName is required')
            alphabet = 'bcdfghjklmnpqrstvwxz2456789'
            while True:
                meta['name'] = meta['generateName'] + ''.join(random.choice(alphabet) for _ in range(5))
                if self._get(kind, ns, meta['name']) is None:
                    break
        self._validate(kind, obj)
        if ns is not None and self._get(self.kinds[('', 'v1', 'namespaces')], None, ns) is None:
            raise ApiError(404, f'namespaces "{ns}" not found', details={'name': ns, 'kind': 'namespaces'})
        if self._get(kind, ns, meta['name']) is not None:
            raise ApiError(409, f'{kind.qualified} "{meta["name"]}" already exists', 'AlreadyExists',
                           _details(kind, meta['name']))
        for field in ('resourceVersion', 'deletionTimestamp', 'deletionGracePeriodSeconds'):
            meta.pop(field, None)
        meta.update(uid=str(uuid.uuid4()), creationTimestamp=now())
        if kind.custom or 'spec' in obj:
            meta['generation'] = 1
        if 'status' in kind.subresources:
            obj.pop('status', None)
            if kind.plural in INITIAL_STATUS:
                obj['status'] = copy.deepcopy(INITIAL_STATUS[kind.plural])
        if kind.plural in ('deployments', 'statefulsets'):
            obj.setdefault('spec', {}).setdefault('replicas', 1)
        if kind.plural == 'secrets':
            obj.setdefault('type', 'Opaque')
            for k, v in (obj.pop('stringData', None) or {}).items():
                obj.setdefault('data', {})[k] = base64.b64encode(str(v).encode()).decode()
        return self._commit(kind, 'ADDED', obj, None)

    def _finish_update(self, kind: Kind, old: JSON, new: JSON, sub: str | None) -> JSON:
        """Apply the status-subresource and system-field rules, then store (or not, if unchanged)."""
        if sub == 'status':
            result = copy.deepcopy(old)
            if 'status' in new:
                result['status'] = new['status']
            else:
                result.pop('status', None)
        else:
            result = new
            result['kind'], result['apiVersion'] = kind.kind, kind.gv
            meta, om = result.setdefault('metadata', {}), old['metadata']
            for f in ('name', 'namespace', 'uid', 'creationTimestamp', 'deletionTimestamp',
                      'deletionGracePeriodSeconds', 'generation', 'resourceVersion'):
                if f in om:
                    meta[f] = om[f]
                else:
                    meta.pop(f, None)
            if 'status' in kind.subresources:
                if 'status' in old:
                    result['status'] = old['status']
                else:
                    result.pop('status', None)
            if kind.plural == 'secrets':
                for k, v in (result.pop('stringData', None) or {}).items():
                    result.setdefault('data', {})[k] = base64.b64encode(str(v).encode()).decode()
            body = lambda o: {k: v for k, v in o.items() if k not in ('metadata', 'status')}
            if 'generation' in om and body(result) != body(old):
                meta['generation'] = om['generation'] + 1
            self._validate(kind, result)
        if result == old:
            return result                         # a no-op write: no new resourceVersion, no event
        meta = result['metadata']
        if meta.get('deletionTimestamp') and not meta.get('finalizers'):
            return self._commit(kind, 'DELETED', result, old)
        return self._commit(kind, 'MODIFIED', result, old)

    def _precondition(self, kind: Kind, old: JSON, rv: Any) -> None:
        if rv not in (None, '') and str(rv) != old['metadata']['resourceVersion']:
            raise conflict(kind, old['metadata']['name'])

    def _replace(self, kind: Kind, call: Call, ns: str | None, name: str) -> JSON:
        new = call.object()
        self._check_identity(kind, call, new, name)
        old = self._need(kind, ns, name)
        self._precondition(kind, old, new['metadata'].get('resourceVersion'))
        return self._finish_update(kind, old, new, call.sub)

    def _apply_patch(self, kind: Kind, call: Call, old: JSON) -> JSON:
        patch, ct = call.data(), call.content_type
        if ct == 'application/json-patch+json':
            return json_patch(old, patch)
        if ct == 'application/strategic-merge-patch+json' and not kind.custom:
            return strategic_merge_patch(old, patch)
        if ct in ('application/merge-patch+json', 'application/apply-patch+yaml'):
            return merge_patch(old, patch)
        raise ApiError(415, f'the body of the request was in an unknown format - accepted media types include: '
                            'application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml'
                            + ('' if kind.custom else ', application/strategic-merge-patch+json'))

    def _patch(self, kind: Kind, call: Call, ns: str | None, name: str) -> tuple[JSON, int]:
        old = self._get(kind, ns, name)
        if old is None:
            if call.content_type == 'application/apply-patch+yaml' and call.sub is None:
                obj = call.object()
                obj['metadata'].setdefault('name', name)
                return self._create(kind, call, obj), 201
            raise not_found(kind, name)
        new = self._apply_patch(kind, call, old)
        if not isinstance(new, dict) or not isinstance(new.get('metadata'), dict):
            raise ApiError(422, 'the patch must leave an object with metadata')
        self._precondition(kind, old, new['metadata'].get('resourceVersion'))
        return self._finish_update(kind, old, new, call.sub), 200

    def _scale_of(self, obj: JSON) -> JSON:
        m = obj['metadata']
        labels = ((obj.get('spec') or {}).get('selector') or {}).get('matchLabels') or {}
        return {'kind': 'Scale', 'apiVersion': 'autoscaling/v1',
                'metadata': {k: m[k] for k in ('name', 'namespace', 'uid', 'resourceVersion', 'creationTimestamp') if k in m},
                'spec': {'replicas': (obj.get('spec') or {}).get('replicas', 0)},
                'status': {'replicas': (obj.get('status') or {}).get('replicas', 0),
                           'selector': ','.join(f'{k}={v}' for k, v in sorted(labels.items()))}}

    def _scale(self, kind: Kind, call: Call, ns: str | None, name: str) -> JSON:
        old = self._need(kind, ns, name)
        scale = self._scale_of(old)
        new_scale = call.object() if call.method == 'PUT' else self._apply_patch(kind, call, scale)
        self._precondition(kind, old, (new_scale.get('metadata') or {}).get('resourceVersion'))
        replicas = (new_scale.get('spec') or {}).get('replicas')
        if not isinstance(replicas, int) or replicas < 0:
            raise ApiError(422, f'Scale.autoscaling "{name}" is invalid: spec.replicas: must be a non-negative integer')
        new = copy.deepcopy(old)
        new.setdefault('spec', {})['replicas'] = replicas
        return self._scale_of(self._finish_update(kind, old, new, None))

    def _delete(self, kind: Kind, call: Call, ns: str | None, name: str) -> JSON:
        old = self._need(kind, ns, name)
        options = call.data() if call.body else {}
        pre = (options or {}).get('preconditions') or {}
        self._precondition(kind, old, pre.get('resourceVersion'))
        if pre.get('uid') and pre['uid'] != old['metadata']['uid']:
            raise ApiError(409, f'Precondition failed: UID in precondition: {pre["uid"]}, UID in object meta: '
                                f'{old["metadata"]["uid"]}', details=_details(kind, name))
        if old['metadata'].get('finalizers'):
            if old['metadata'].get('deletionTimestamp'):
                return old
            new = copy.deepcopy(old)
            new['metadata'].update(deletionTimestamp=now(), deletionGracePeriodSeconds=0)
            return self._commit(kind, 'MODIFIED', new, old)
        gone = self._commit(kind, 'DELETED', copy.deepcopy(old), old)
        if kind.custom or kind.plural in ('pods', 'namespaces'):
            return gone
        return {'kind': 'Status', 'apiVersion': 'v1', 'metadata': {}, 'status': 'Success',
                'details': dict(_details(kind, name), uid=old['metadata']['uid'])}

    def _delete_collection(self, kind: Kind, call: Call) -> JSON:
        items = [self._delete(kind, call, o['metadata'].get('namespace'), o['metadata']['name'])
                 for o in self._select(kind, call.namespace, call.params)]
        return {'kind': f'{kind.kind}List', 'apiVersion': kind.gv,
                'metadata': {'resourceVersion': str(self.rv)}, 'items': [i for i in items if i.get('kind') != 'Status']}

    # --- watches --------------------------------------------------------------------------------

    async def _watch(self, kind: Kind, call: Call) -> aiohttp.web.StreamResponse:
        q = dict(call.params)
        if call.name:                                      # a watch on one object: legacy URL form
            q['fieldSelector'] = ','.join(filter(None, [q.get('fieldSelector'), f'metadata.name={call.name}']))
        labels = parse_label_selector(q.get('labelSelector', ''))
        fields = parse_field_selector(q.get('fieldSelector', ''), kind)
        ns = call.namespace if kind.namespaced else None
        bookmarks = q.get('allowWatchBookmarks') in ('true', '1')
        send_initial = q.get('sendInitialEvents') == 'true'
        rv_text = q.get('resourceVersion', '')
        try:
            timeout = float(q['timeoutSeconds']) if q.get('timeoutSeconds') else None
            cursor = self.rv if rv_text in ('', '0') else int(rv_text)
        except ValueError:
            raise ApiError(400, f'invalid resourceVersion or timeoutSeconds')
        initial = self._select(kind, ns, q) if rv_text in ('', '0') or send_initial else []
        if send_initial:
            cursor = self.rv

        response = aiohttp.web.StreamResponse(headers={'Content-Type': 'application/json'})
        response.enable_chunked_encoding()
        await response.prepare(call.raw)
        transport = call.raw.transport
        if transport is not None:
            self.watches.add(transport)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout if timeout else None
        next_bookmark = loop.time() + self.bookmark_interval
        matches = lambda o: o is not None and (ns is None or o['metadata'].get('namespace') == ns) \
            and labels_match(labels, o['metadata'].get('labels') or {}) and fields_match(fields, o)

        async def send(type_: str, obj: JSON) -> None:
            await response.write(json.dumps({'type': type_, 'object': obj}).encode() + b'\n')

        def bookmark(extra: JSON | None = None) -> JSON:
            return {'kind': kind.kind, 'apiVersion': kind.gv,
                    'metadata': dict({'resourceVersion': str(cursor)}, **(extra or {}))}
        try:
            for obj in initial:
                await send('ADDED', obj)
            if send_initial:
                await send('BOOKMARK', bookmark({'annotations': {'k8s.io/initial-events-end': 'true'}}))
            while True:
                if cursor < self.horizon:
                    await send('ERROR', expired(cursor, self.horizon).status())
                    break
                changed = self.changed
                for ev in [e for e in self.events if e.rv > cursor]:
                    cursor = ev.rv
                    if ev.kind is not kind:
                        continue
                    new_ok, old_ok = matches(ev.obj), ev.type == 'MODIFIED' and matches(ev.old)
                    if ev.type != 'MODIFIED' and new_ok:
                        await send(ev.type, ev.obj)
                    elif ev.type == 'MODIFIED' and (new_ok or old_ok):
                        await send('MODIFIED' if new_ok and old_ok else 'ADDED' if new_ok else 'DELETED', ev.obj)
                t = loop.time()
                if deadline is not None and t >= deadline:
                    break
                if bookmarks and t >= next_bookmark:
                    await send('BOOKMARK', bookmark())
                    next_bookmark = t + self.bookmark_interval
                waits = [deadline - t if deadline else 30.0, next_bookmark - t if bookmarks else 30.0]
                try:
                    await asyncio.wait_for(changed.wait(), max(0.0, min(waits)))
                except asyncio.TimeoutError:
                    pass
            await response.write_eof()
        except (ConnectionError, RuntimeError):
            pass                                            # the client went away (or was cut off)
        finally:
            self.watches.discard(transport)
        return response

    # --- discovery: kmock's scaffold routes, with correct answers ---------------------------------

    def _versions(self, group: str) -> list[str]:
        rank = lambda v: [int(x) if x.isdigit() else {'alpha': -2, 'beta': -1}.get(x, 0)
                          for x in re.findall(r'\d+|alpha|beta', v)]
        return sorted({k.version for k in self.kinds.values() if k.group == group}, key=rank, reverse=True)

    def _group(self, group: str) -> JSON:
        versions = [{'groupVersion': f'{group}/{v}', 'version': v} for v in self._versions(group)]
        return {'name': group, 'versions': versions, 'preferredVersion': versions[0]}

    async def _serve_root(self, request: rendering.Request) -> JSON:
        paths = {'/api', '/api/v1', '/apis', '/version', '/healthz'}
        for k in self.kinds.values():
            if k.group:
                paths |= {f'/apis/{k.group}', f'/apis/{k.gv}'}
        return {'paths': sorted(paths)}

    async def _serve_server_version(self, request: rendering.Request) -> JSON:
        return {'major': '1', 'minor': '32', 'gitVersion': 'v1.32.0-chebackup-kmock', 'gitCommit': '',
                'gitTreeState': 'clean', 'buildDate': '2025-01-01T00:00:00Z', 'goVersion': 'python',
                'compiler': 'kmock', 'platform': 'linux/amd64'}

    async def _serve_api(self, request: rendering.Request) -> JSON:
        return {'kind': 'APIVersions', 'versions': ['v1'], 'serverAddressByClientCIDRs': [
            {'clientCIDR': '0.0.0.0/0', 'serverAddress': f'{request.url.host}:{request.url.port}'}]}

    async def _serve_apis(self, request: rendering.Request) -> JSON:
        groups = sorted({k.group for k in self.kinds.values() if k.group})
        return {'kind': 'APIGroupList', 'apiVersion': 'v1', 'groups': [self._group(g) for g in groups]}

    async def _serve_group(self, request: rendering.Request) -> JSON:
        group = request.resource.group if request.resource else None
        if not group or not self._versions(group):
            raise ApiError(404, 'the server could not find the requested resource')
        return dict(self._group(group), kind='APIGroup', apiVersion='v1')

    async def _serve_version(self, request: rendering.Request) -> JSON:
        group, version = request.resource.group, request.resource.version
        kinds = [k for k in self.kinds.values() if (k.group, k.version) == (group, version)]
        if not kinds:
            raise ApiError(404, 'the server could not find the requested resource')
        resources = []
        for k in sorted(kinds, key=lambda k: k.plural):
            resources.append({'name': k.plural, 'singularName': k.kind.lower(), 'namespaced': k.namespaced,
                              'kind': k.kind, 'verbs': VERBS, 'shortNames': list(k.short),
                              'categories': list(k.categories)})
            for sub in k.subresources:
                entry = {'name': f'{k.plural}/{sub}', 'singularName': '', 'namespaced': k.namespaced,
                         'kind': k.kind, 'verbs': ['get', 'patch', 'update']}
                if sub == 'scale':
                    entry.update(group='autoscaling', version='v1', kind='Scale')
                resources.append(entry)
        return {'kind': 'APIResourceList', 'apiVersion': 'v1', 'groupVersion': kinds[0].gv, 'resources': resources}

    # --- test hooks -----------------------------------------------------------------------------

    async def _serve_hook(self, call: Call) -> aiohttp.web.StreamResponse:
        path, q = call.raw.path, call.params
        if path in ('/healthz', '/livez', '/readyz'):
            return aiohttp.web.Response(text='ok')
        if path == '/_requests' and call.method == 'GET':
            return json_response(self.log)
        if call.method != 'POST':
            raise ApiError(405, 'test hooks take POST')
        if path == '/_requests/clear':
            self.log.clear()
        elif path == '/_fault/break-watches':
            count = self.break_watches()
            return json_response({'broken': count})
        elif path == '/_fault/compact':
            self.horizon = self.rv
            self.events.clear()
        elif path == '/_fault/conflict':
            if not q.get('plural'):
                raise ApiError(400, 'plural is required')
            self.conflicts[q['plural']] = int(q.get('count', '1'))
        elif path == '/_fault/fail':
            self.failures.extend([(int(q.get('code', '500')), q.get('plural') or None)] * int(q.get('count', '1')))
        elif path == '/_fault/clear':
            self.conflicts.clear()
            self.failures.clear()
        else:
            raise ApiError(404, f'unknown test hook {path}')
        return json_response({'ok': True, 'resourceVersion': str(self.rv)})

    def break_watches(self) -> int:
        """Cut every open watch connection mid-stream (no final chunk)."""
        transports, self.watches = self.watches, set()
        for t in transports:
            t.abort() if hasattr(t, 'abort') else t.close()
        return len(transports)

    # --- persistence ----------------------------------------------------------------------------

    def save_state(self) -> None:
        if self.state_path is None:
            return
        objects = [{'resource': [ref.group, ref.version, ref.plural], 'object': obj.raw}
                   for (ref, _, _), obj in self.objects.items() if not obj.deleted]
        tmp = self.state_path.with_name(self.state_path.name + '.tmp')
        tmp.write_text(json.dumps({'resourceVersion': self.rv, 'objects': objects}))
        os.replace(tmp, self.state_path)

    def load_state(self) -> None:
        if self.state_path is None or not self.state_path.exists():
            return
        state = json.loads(self.state_path.read_text())
        for entry in state['objects']:
            group, version, plural = entry['resource']
            obj = entry['object']
            if plural == 'customresourcedefinitions':
                for k in kinds_from_crd(obj):
                    self.add_kind(k)
            ref = kmock.resource(group, version, plural)
            self.objects[ref, obj['metadata'].get('namespace'), obj['metadata']['name']] = obj
        self.rv = self.horizon = int(state['resourceVersion'])

    def ensure_namespace(self, name: str) -> None:
        kind = self.kinds[('', 'v1', 'namespaces')]
        if self._get(kind, None, name) is None:
            self._create(kind, None, {'apiVersion': 'v1', 'kind': 'Namespace', 'metadata': {'name': name}})  # type: ignore[arg-type]


# --- TLS, kubeconfig, main --------------------------------------------------------------------

def ensure_tls(directory: Path, host: str) -> ssl.SSLContext:
    """Create DIR/ca.{crt,key} and DIR/server.{crt,key} (for 127.0.0.1, ::1, localhost, host) once."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    directory.mkdir(parents=True, exist_ok=True)
    files = {n: directory / n for n in ('ca.crt', 'ca.key', 'server.crt', 'server.key')}
    if not all(f.exists() for f in files.values()):
        start = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(hours=1)
        end = start + datetime.timedelta(days=3650)

        def pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
            return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption())
        ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, 'che-backup test apiserver CA')])
        ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
              .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
              .not_valid_before(start).not_valid_after(end)
              .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
              .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True)
              .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
              .sign(ca_key, hashes.SHA256()))
        sans: list[x509.GeneralName] = [x509.DNSName('localhost'), x509.IPAddress(ipaddress.ip_address('127.0.0.1')),
                                        x509.IPAddress(ipaddress.ip_address('::1'))]
        try:
            if ipaddress.ip_address(host) not in (ipaddress.ip_address('127.0.0.1'), ipaddress.ip_address('::1')):
                sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, 'kube-apiserver')]))
                .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(start).not_valid_after(end)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(True, True, False, False, False, False, False, False, False), critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
                .add_extension(x509.SubjectAlternativeName(sans), critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
                .sign(ca_key, hashes.SHA256()))
        for path, data in ((files['ca.key'], pem_key(ca_key)), (files['server.key'], pem_key(key)),
                           (files['ca.crt'], ca.public_bytes(serialization.Encoding.PEM)),
                           (files['server.crt'], cert.public_bytes(serialization.Encoding.PEM))):
            path.write_bytes(data)
            path.chmod(0o600 if path.suffix == '.key' else 0o644)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(files['server.crt'], files['server.key'])
    return context


def tls_server_class(context: ssl.SSLContext | None, shutdown_timeout: float = 2.0) -> type:
    """kmock.Server's aiohttp test server, serving TLS and accepting bodies up to the API limit."""
    class Served(aiohttp.test_utils.RawTestServer):
        async def start_server(self, loop: Any = None, **kwargs: Any) -> None:
            await super().start_server(loop=loop, ssl=context, **kwargs)

        async def _make_runner(self, debug: bool = True, **kwargs: Any) -> aiohttp.web.ServerRunner:
            def factory(message: Any, payload: Any, protocol: Any, writer: Any, task: Any) -> aiohttp.web.BaseRequest:
                return aiohttp.web.BaseRequest(message, payload, protocol, writer, task, asyncio.get_running_loop(),
                                               client_max_size=MAX_BODY * 2)
            server = aiohttp.web.Server(self._handler, request_factory=factory, handler_cancellation=True)
            return aiohttp.web.ServerRunner(server, shutdown_timeout=shutdown_timeout)
    return Served


def write_kubeconfig(out: Path, url: str, ca: Path | None, token: str | None, namespace: str) -> None:
    q = json.dumps                                       # JSON strings are valid YAML scalars
    cluster = f'    server: {q(url)}\n'
    if ca is not None:
        cluster += f'    certificate-authority-data: {base64.b64encode(ca.read_bytes()).decode()}\n'
    user = f'    token: {q(token)}\n' if token else '    {}\n'
    out.write_text(
        'apiVersion: v1\nkind: Config\nclusters:\n- name: che-backup-test\n  cluster:\n' + cluster +
        'users:\n- name: che-backup-test\n  user:\n' + user +
        'contexts:\n- name: che-backup-test\n  context:\n    cluster: che-backup-test\n'
        f'    user: che-backup-test\n    namespace: {q(namespace)}\n'
        'current-context: che-backup-test\npreferences: {}\n')
    out.chmod(0o600)


async def serve(args: argparse.Namespace) -> None:
    context = ensure_tls(Path(args.tls_dir), args.host) if args.tls_dir else None
    api = ApiServer(token=args.token, state_path=Path(args.state) if args.state else None,
                    bookmark_interval=args.bookmark_interval, history_size=args.history)
    api.load_state()
    for ns in dict.fromkeys(['default', 'kube-system', 'kube-public', args.namespace]):
        api.ensure_namespace(ns)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    host = f'[{args.host}]' if ':' in args.host else args.host

    def kubeconfig(port: int) -> None:
        if args.kubeconfig:
            write_kubeconfig(Path(args.kubeconfig), f'{"https" if context else "http"}://{host}:{port}',
                             Path(args.tls_dir) / 'ca.crt' if context else None, args.token, args.namespace)
    if args.port:
        kubeconfig(args.port)       # before the port opens: launchers may wait for the port only
    async with api, kmock.Server(api, host=args.host, port=args.port, server_cls=tls_server_class(context)) as server:
        url = f'{"https" if context else "http"}://{host}:{server.port}'
        if not args.port:
            kubeconfig(server.port)
        if args.pid_file:
            Path(args.pid_file).write_text(f'{os.getpid()}\n')
        print(f'apiserver: listening on {url}', flush=True)
        await stop.wait()
        api.break_watches()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description='Kubernetes API server stand-in for tests (kmock-based).')
    p.add_argument('--port', type=int, required=True, help='0 picks a free port (printed when ready)')
    p.add_argument('--host', default='127.0.0.1')
    p.add_argument('--token', help='require Authorization: Bearer TOKEN on API requests')
    p.add_argument('--tls-dir', help='serve HTTPS; CA and server certificate are created here once')
    p.add_argument('--state', help='JSON file with all objects, rewritten after every write')
    p.add_argument('--kubeconfig', help='write a kubeconfig for this server here')
    p.add_argument('--namespace', default='eclipse-che', help='created at start; the kubeconfig context namespace')
    p.add_argument('--pid-file')
    p.add_argument('--bookmark-interval', type=float, default=2.0, help='seconds between watch BOOKMARKs')
    p.add_argument('--history', type=int, default=1000, help='watch events kept for resuming watches')
    asyncio.run(serve(p.parse_args(argv)))


if __name__ == '__main__':
    main()
