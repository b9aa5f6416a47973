{{- define "wpo.name" -}}workerpool-operator{{- end -}}

{{- define "wpo.fullname" -}}
{{- if contains "workerpool-operator" .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-workerpool-operator" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "wpo.labels" -}}
app.kubernetes.io/name: {{ include "wpo.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "wpo.selectorLabels" -}}
app.kubernetes.io/name: {{ include "wpo.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "wpo.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "wpo.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "wpo.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "wpo.webhookConfigurationName" -}}
{{- printf "%s-evictions" (include "wpo.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "wpo.webhookSecretName" -}}
{{- printf "%s-webhook-tls" (include "wpo.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The permissions the operator needs, shared by the ClusterRole and the per-namespace Roles. */}}
{{- define "wpo.rules" -}}
# WorkerPools: watched (Kopf on.event handlers only: Kopf never patches them), and
# patched only in metadata.finalizers: bifrost.dev/retire-workers, on a pool whose
# worker kills what runs on SIGTERM (deleting it retires the workers first).
- apiGroups: ["bifrost.dev"]
  resources: ["workerpools"]
  verbs: ["get", "list", "watch", "patch"]
# Status is the operator's only write to a WorkerPool.
- apiGroups: ["bifrost.dev"]
  resources: ["workerpools/status"]
  verbs: ["get", "patch"]
# Worker pods: created, watched, deleted (never updated: replaced instead);
# patched only in annotations: one whose eviction is held (bifrost.dev/evicting), and
# a busy worker's node-autoscaler marks (karpenter.sh/do-not-disrupt, safe-to-evict).
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch", "create", "delete", "patch"]
# A worker pod's readiness gate (bifrost.dev/worker-registered): opened once its worker registers.
- apiGroups: [""]
  resources: ["pods/status"]
  verbs: ["patch"]
# spec.redis.urlSecretRef: get by name only (no list/watch of Secrets).
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get"]
# Worker pods are owned by their WorkerPool (blockOwnerDeletion): under
# OwnerReferencesPermissionEnforcement (OpenShift) that needs update on its finalizers.
- apiGroups: ["bifrost.dev"]
  resources: ["workerpools/finalizers"]
  verbs: ["update"]
# Events on WorkerPools (kubectl describe): created, never patched.
- apiGroups: ["", "events.k8s.io"]
  resources: ["events"]
  verbs: ["create"]
{{- end -}}
