"""Review APIs and protected namespaces through the official kubernetes Python client.

Run by crates/yard/tests/auth_reviews_e2e.rs with KUBECONFIG pointing at a fresh `yard apiserver`;
prints `auth reviews: ok` when every check passed."""
import json
import os
import urllib.parse

import yaml

from kubernetes import client, config
from kubernetes.client.rest import ApiException

config.load_kube_config(os.environ["KUBECONFIG"])
api = client.ApiClient()
authn = client.AuthenticationV1Api(api)
authz = client.AuthorizationV1Api(api)
core = client.CoreV1Api(api)
with open(os.environ["KUBECONFIG"]) as f:
    token = yaml.safe_load(f)["users"][0]["user"]["token"]


def status_of(exc):
    return exc.status, json.loads(exc.body)


# TokenReview: the admin token is the admin; a bogus one is nobody; an empty one is a bad request.
tr = authn.create_token_review(client.V1TokenReview(spec=client.V1TokenReviewSpec(token=token)))
assert tr.status.authenticated is True, tr
assert tr.status.user.username == "kubernetes-admin", tr
assert "system:authenticated" in tr.status.user.groups, tr
tr = authn.create_token_review(client.V1TokenReview(spec=client.V1TokenReviewSpec(token="bogus-" + token)))
assert not tr.status.authenticated, tr
assert not tr.status.user.username, tr
try:
    authn.create_token_review(client.V1TokenReview(spec=client.V1TokenReviewSpec(token="")))
    raise AssertionError("empty token accepted")
except ApiException as e:
    code, st = status_of(e)
    assert code == 400 and st["message"] == "token is required for TokenReview in authentication", st

# SelfSubjectReview.
ssr = authn.create_self_subject_review(client.V1SelfSubjectReview())
assert ssr.status.user_info.username == "kubernetes-admin", ssr

# SubjectAccessReview: another user has no rights today; an admin group does.
ra = client.V1ResourceAttributes(namespace="default", verb="get", resource="pods")
sar = authz.create_subject_access_review(
    client.V1SubjectAccessReview(spec=client.V1SubjectAccessReviewSpec(user="bob", resource_attributes=ra)))
assert sar.status.allowed is False, sar
sar = authz.create_subject_access_review(client.V1SubjectAccessReview(
    spec=client.V1SubjectAccessReviewSpec(user="alice", groups=["system:masters"], resource_attributes=ra)))
assert sar.status.allowed is True, sar
try:
    authz.create_subject_access_review(
        client.V1SubjectAccessReview(spec=client.V1SubjectAccessReviewSpec(resource_attributes=ra)))
    raise AssertionError("SAR without a user accepted")
except ApiException as e:
    code, st = status_of(e)
    assert code == 422, st
    assert st["message"] == ('SubjectAccessReview.authorization.k8s.io "" is invalid: spec.user: Invalid value: "": '
                             'at least one of user or group must be specified'), st

# SelfSubjectAccessReview without attributes.
try:
    authz.create_self_subject_access_review(
        client.V1SelfSubjectAccessReview(spec=client.V1SelfSubjectAccessReviewSpec()))
    raise AssertionError("SSAR without attributes accepted")
except ApiException as e:
    code, st = status_of(e)
    assert code == 422, st
    assert st["message"] == ('SelfSubjectAccessReview.authorization.k8s.io "" is invalid: spec.resourceAttributes: '
                             'Invalid value: "null": exactly one of nonResourceAttributes or resourceAttributes must '
                             'be specified'), st

# LocalSubjectAccessReview: allowed in its namespace, refused for another one.
lsar = authz.create_namespaced_local_subject_access_review("default", client.V1LocalSubjectAccessReview(
    metadata=client.V1ObjectMeta(namespace="default"),
    spec=client.V1SubjectAccessReviewSpec(groups=["system:masters"], resource_attributes=ra)))
assert lsar.status.allowed is True, lsar
other = client.V1ResourceAttributes(namespace="kube-system", verb="get", resource="pods")
try:
    authz.create_namespaced_local_subject_access_review("default", client.V1LocalSubjectAccessReview(
        metadata=client.V1ObjectMeta(namespace="default"),
        spec=client.V1SubjectAccessReviewSpec(user="bob", resource_attributes=other)))
    raise AssertionError("LSAR namespace mismatch accepted")
except ApiException as e:
    code, st = status_of(e)
    assert code == 422, st
    assert st["message"] == ('LocalSubjectAccessReview.authorization.k8s.io "" is invalid: '
                             'spec.resourceAttributes.namespace: Invalid value: "kube-system": must match '
                             'metadata.namespace'), st
try:
    authz.create_namespaced_local_subject_access_review("default", client.V1LocalSubjectAccessReview(
        metadata=client.V1ObjectMeta(namespace="kube-system"),
        spec=client.V1SubjectAccessReviewSpec(user="bob", resource_attributes=other)))
    raise AssertionError("LSAR body namespace mismatch accepted")
except ApiException as e:
    code, st = status_of(e)
    assert code == 400, st

# SelfSubjectRulesReview.
rules = authz.create_self_subject_rules_review(
    client.V1SelfSubjectRulesReview(spec=client.V1SelfSubjectRulesReviewSpec(namespace="default")))
assert any("*" in r.verbs and "*" in r.resources for r in rules.status.resource_rules), rules
assert rules.status.incomplete is False, rules

# Reviews are create-only.
try:
    client.CustomObjectsApi(api).list_cluster_custom_object("authorization.k8s.io", "v1", "selfsubjectaccessreviews")
    raise AssertionError("list of reviews served")
except ApiException as e:
    assert e.status == 405, e.status

# Protected namespaces: a delete-collection that would take kube-system refuses and deletes nothing.
# (The Python client has no call for it: plain HTTP through its connection pool.)
def delete_namespaces(selector):
    url = api.configuration.host + "/api/v1/namespaces?labelSelector=" + urllib.parse.quote(selector)
    r = api.rest_client.pool_manager.request("DELETE", url, headers={"Authorization": "Bearer " + token})
    return r.status, json.loads(r.data)


core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="doomed")))
code, st = delete_namespaces("kubernetes.io/metadata.name in (doomed,kube-system)")
assert code == 403 and st["reason"] == "Forbidden", st
assert st["message"] == 'namespaces "kube-system" is forbidden: this namespace may not be deleted', st
assert core.read_namespace("doomed").metadata.name == "doomed"
assert core.read_namespace("kube-system").status.phase == "Active"
code, st = delete_namespaces("kubernetes.io/metadata.name=doomed")
assert code == 200, st

print("auth reviews: ok")
