{{/* Names, labels and the few facts several templates share: defined once here. */}}

{{- define "triton.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "triton.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains (include "triton.name" .) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "triton.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "triton.selectorLabels" -}}
app.kubernetes.io/name: {{ include "triton.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "triton.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "triton.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "triton.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "triton.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "triton.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "triton.controlSecretName" -}}
{{- default (printf "%s-control-key" (include "triton.fullname" .)) .Values.modelControl.existingSecret -}}
{{- end -}}

{{- define "triton.modelRepositoryPath" -}}
{{- if eq .Values.modelRepository.source "image" -}}{{ .Values.modelRepository.imagePath }}{{- else -}}/models{{- end -}}
{{- end -}}

{{/* API versions: the newest the cluster serves (autoscaling/v2 and policy/v1 are missing before 1.23 / 1.21). */}}
{{- define "triton.hpaApiVersion" -}}
{{- if .Capabilities.APIVersions.Has "autoscaling/v2" -}}autoscaling/v2
{{- else if .Capabilities.APIVersions.Has "autoscaling/v2beta2" -}}autoscaling/v2beta2
{{- else -}}{{ fail "autoscaling.engine=hpa needs autoscaling/v2 or autoscaling/v2beta2; this cluster serves neither" }}
{{- end -}}
{{- end -}}

{{- define "triton.pdbApiVersion" -}}
{{- if .Capabilities.APIVersions.Has "policy/v1" -}}policy/v1{{- else -}}policy/v1beta1{{- end -}}
{{- end -}}

{{/* The autoscaling metric, named once for prometheus-adapter, the HPA and KEDA. */}}
{{- define "triton.autoscalingMetricName" -}}
{{- if eq .Values.autoscaling.metric "queueTime" -}}triton_queue_time_per_request_us{{- else -}}triton_pending_requests{{- end -}}
{{- end -}}

{{/*
Service queue time per request for a selector `sel` (`{...}` or empty), a grouping `by` and a rate `window`; `clamp`
clamps the denominator so an idle pod reads 0 (and the HPA can scale down) instead of no value. The same expression
as tools/monitoring/queries.py builds (tests hold them equal): the queue-time counters of all models summed, divided
by the summed requests to the entry models (entryModels) — a ratio of sums, never an average of per-model ratios,
which under-reports as soon as several models are loaded; only the entry models' requests divide, so an ensemble's
steps are not counted as requests again.
*/}}
{{- define "triton.queueTimeQuery" -}}
{{- $entry := printf "model=~%q" (join "|" .root.Values.entryModels) -}}
{{- $entrySel := ternary (printf "{%s}" $entry) (printf "{%s, %s}" (trimSuffix "}" (trimPrefix "{" .sel)) $entry) (eq .sel "") -}}
{{- $requests := printf "sum by (%s) (rate(nv_inference_request_success%s[%s]))" .by $entrySel .window -}}
sum by ({{ .by }}) (rate(nv_inference_queue_duration_us{{ .sel }}[{{ .window }}])) / {{ if .clamp }}clamp_min({{ $requests }}, 0.001){{ else }}{{ $requests }}{{ end }}
{{- end -}}

{{/* The PromQL of the autoscaling metric for a selector `sel` (`{...}`) and a grouping `by`. */}}
{{- define "triton.autoscalingQuery" -}}
{{- if eq .root.Values.autoscaling.metric "queueTime" -}}
{{- include "triton.queueTimeQuery" (dict "root" .root "sel" .sel "by" .by "window" .root.Values.autoscaling.window "clamp" true) -}}
{{- else -}}
sum by ({{ .by }}) (nv_inference_pending_request_count{{ .sel }})
{{- end -}}
{{- end -}}

{{/* Values an older chart had, refused with what replaces them (the schema lets them through to get here). */}}
{{- define "triton.checkRemovedValues" -}}
{{- if hasKey .Values.autoscaling "entryModel" -}}
{{- fail "autoscaling.entryModel was replaced by entryModels (a list of the models clients call, top level)" -}}
{{- end -}}
{{- if hasKey .Values.probes.stubCheck "inferModel" -}}
{{- fail "probes.stubCheck.inferModel was removed: readiness checks that every one of entryModels is ready" -}}
{{- end -}}
{{- end -}}

{{- define "triton.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: {{ .Values.securityContext.readOnlyRootFilesystem }}
runAsNonRoot: true
capabilities:
  drop: ["ALL"]
{{- end -}}

{{- define "triton.checkReplicaRange" -}}
{{- if gt (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas) -}}
{{- fail (printf "autoscaling.minReplicas (%d) is above autoscaling.maxReplicas (%d)" (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) -}}
{{- end -}}
{{- end -}}

{{/*
Readiness or liveness probe. With probes.stubCheck on: an exec probe running the image's probe.py, which checks the
health endpoint and that every instance of every Python-backend model still has its stub process (Triton 2.51 does
not restart a dead stub and keeps answering 200 on /v2/health/*); readiness also checks that every entry model is
ready (after an explicit unload the server itself is ready again). The probe's own
deadline is one second under timeoutSeconds, so it reports what is wrong before the kubelet gives up on it.
Otherwise: httpGet on the health path. Arguments: Values, probe (readiness|liveness), path.
*/}}
{{- define "triton.probe" -}}
{{- $check := .Values.probes.stubCheck -}}
{{- $probe := index .Values.probes .probe -}}
{{- if $check.enabled }}
exec:
  command:
    - python3
    - -I
    - {{ $check.path }}
    - --url=http://127.0.0.1:{{ .Values.service.httpPort }}
    - --timeout={{ max 1 (sub (int $probe.timeoutSeconds) 1) }}
    {{- if eq .probe "readiness" }}
    - --ready
    {{- range .Values.entryModels }}
    - --model={{ . }}
    {{- end }}
    {{- end }}
{{- else }}
httpGet:
  path: {{ .path }}
  port: http
{{- end }}
periodSeconds: {{ $probe.periodSeconds }}
failureThreshold: {{ $probe.failureThreshold }}
timeoutSeconds: {{ $probe.timeoutSeconds }}
{{- end -}}

{{/*
The termination path, checked once: the grace period must cover the preStop delay plus the longest request (Triton's
--exit-timeout-secs), or Kubernetes kills pods with requests in flight; on spot nodes it must also fit in the node's
preemption notice, or the node goes away first. Prints the grace period.
*/}}
{{- define "triton.terminationGracePeriod" -}}
{{- $grace := int .Values.deployment.terminationGracePeriodSeconds -}}
{{- $drain := int (add .Values.deployment.preStopDelaySeconds .Values.server.maxRequestSeconds) -}}
{{- if le $grace $drain -}}
{{- fail (printf "deployment.terminationGracePeriodSeconds (%d) must exceed deployment.preStopDelaySeconds + server.maxRequestSeconds (%d), or Kubernetes kills pods with requests in flight" $grace $drain) -}}
{{- end -}}
{{- $notice := int .Values.spot.noticeSeconds -}}
{{- if and .Values.spot.enabled (gt $grace $notice) -}}
{{- fail (printf "deployment.terminationGracePeriodSeconds (%d) exceeds spot.noticeSeconds (%d): a preempted node shuts down before its pods finish their in-flight requests; choose deployment.preStopDelaySeconds + server.maxRequestSeconds (now %d) < terminationGracePeriodSeconds <= spot.noticeSeconds" $grace $notice $drain) -}}
{{- end -}}
{{- $grace -}}
{{- end -}}

{{- define "triton.priorityClassName" -}}
{{- if and .Values.priorityClass.create (not .Values.deployment.priorityClassName) -}}
{{- fail "priorityClass.create needs deployment.priorityClassName (the name of the class to create)" -}}
{{- end -}}
{{- .Values.deployment.priorityClassName -}}
{{- end -}}

{{/* Container resources; a GPU pool adds its extended resource to requests and limits (they must be equal). */}}
{{- define "triton.resources" -}}
{{- $resources := deepCopy .Values.resources -}}
{{- $gpu := .Values.gpu -}}
{{- if $gpu.enabled -}}
{{- $count := dict $gpu.resource (int $gpu.count) -}}
{{- $_ := set $resources "requests" (merge (deepCopy $count) (default dict $resources.requests)) -}}
{{- $_ := set $resources "limits" (merge (deepCopy $count) (default dict $resources.limits)) -}}
{{- end -}}
{{- toYaml $resources -}}
{{- end -}}

{{- define "triton.nodeSelector" -}}
{{- $selector := deepCopy .Values.deployment.nodeSelector -}}
{{- if .Values.gpu.enabled -}}
{{- $selector = merge (deepCopy .Values.gpu.nodeSelector) $selector -}}
{{- end -}}
{{- toYaml $selector -}}
{{- end -}}

{{- define "triton.tolerations" -}}
{{- $tolerations := .Values.deployment.tolerations -}}
{{- if .Values.gpu.enabled -}}{{- $tolerations = concat $tolerations .Values.gpu.tolerations -}}{{- end -}}
{{- if .Values.spot.enabled -}}{{- $tolerations = concat $tolerations .Values.spot.tolerations -}}{{- end -}}
{{- toYaml $tolerations -}}
{{- end -}}

{{/*
deployment.affinity, plus with spot on a *preferred* node affinity to spot nodes: the scheduler picks a spot node
when one has room and an on-demand node otherwise, so a spot shortage never leaves pods Pending.
*/}}
{{- define "triton.affinity" -}}
{{- $affinity := deepCopy .Values.deployment.affinity -}}
{{- if .Values.spot.enabled -}}
{{- $spot := .Values.spot -}}
{{- $node := default dict $affinity.nodeAffinity -}}
{{- $term := dict "weight" (int $spot.weight) "preference" (dict "matchExpressions" (list (dict "key" $spot.nodeLabel "operator" "In" "values" $spot.nodeLabelValues))) -}}
{{- $_ := set $node "preferredDuringSchedulingIgnoredDuringExecution" (append (default list $node.preferredDuringSchedulingIgnoredDuringExecution) $term) -}}
{{- $_ := set $affinity "nodeAffinity" $node -}}
{{- end -}}
{{- toYaml $affinity -}}
{{- end -}}

{{- define "triton.topologySpreadConstraints" -}}
{{- $constraints := .Values.deployment.topologySpreadConstraints -}}
{{- $spread := .Values.topologySpread -}}
{{- if $spread.enabled -}}
{{- range $spread.topologyKeys -}}
{{- $selector := dict "matchLabels" (include "triton.selectorLabels" $ | fromYaml) -}}
{{- $constraints = append $constraints (dict "topologyKey" . "maxSkew" (int $spread.maxSkew) "whenUnsatisfiable" $spread.whenUnsatisfiable "labelSelector" $selector) -}}
{{- end -}}
{{- end -}}
{{- toYaml $constraints -}}
{{- end -}}
